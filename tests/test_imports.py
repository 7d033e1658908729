"""The import graph of ``src/verydeep``: no cycles, and every import points down the layers of
docs/ARCHITECTURE.md ("Import layers"). Imports inside functions count as much as those at the
top of a file: a lazy import hides a cycle from Python, not from this test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "verydeep"

# a unit (a top-level module or package of verydeep) may import units of lower layers only, and
# modules of its own unit without a cycle; the same table is in docs/ARCHITECTURE.md
LAYERS = [
    ["ranges", "hardware", "allocator"],
    ["distributed", "meters", "models", "numerics"],
    ["config"],
    ["data"],
    ["engine", "optim", "schedule"],
    ["io"],
    ["finetune", "evaluation"],
    ["build", "features", "transfer", "localization", "backbone"],
    ["train", "api", "caltech", "losses"],
    ["transfer_protocol"],
    ["study", "bench", "style"],
    ["verydeep"],  # the package itself: its public names
    ["cli"],
    ["__main__"],
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The verydeep modules ``name`` imports anywhere in its file (``from pkg import mod`` names
    the module, ``from pkg import func`` the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in mods}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:
                target = f"{base}.{a.name}"
                out.add(target if target in mods else base)
    return {m for m in out if m in mods and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, mods) for name, path in mods.items()}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_unit_has_a_layer(graph):
    assert {unit(m) for m in graph} == set(RANK)


def test_imports_point_down(graph):
    upward = [
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in sorted(targets)
        if unit(a) != unit(b) and RANK[unit(a)] <= RANK[unit(b)]
    ]
    assert upward == []


def test_there_is_no_import_cycle(graph):
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t] if t in path else [m, t]
            if t not in state and (cycle := visit(t, [*path, t])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m, [m])
            assert cycle is None, " -> ".join(cycle)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """A lazy upward import is found (the form the old cycles took)."""
    pkg = tmp_path / "verydeep"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "train.py").write_text("")
    (pkg / "io" / "run.py").write_text("def f():\n    from ..train import fit\n")
    mods = {"verydeep": pkg / "__init__.py", "verydeep.io": pkg / "io" / "__init__.py",
            "verydeep.io.run": pkg / "io" / "run.py", "verydeep.train": pkg / "train.py"}  # fmt: skip
    assert imported("verydeep.io.run", mods["verydeep.io.run"], mods) == {"verydeep.train"}
