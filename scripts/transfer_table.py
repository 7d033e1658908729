"""Markdown table of the results written by scripts/transfer_report.sh (runs/transfer-report/*.json,
or the folder in OUT, as for the report script).

Usage: [OUT=DIR] [MODES="..."] .venv/bin/python scripts/transfer_table.py [LOG ...]; with the
script's logs (a later log's run of a command replaces an earlier one) a column gives each row's CPU
seconds (user + sys, 8 commands). With several MODES (as given to the report script) a second table
gives, per net, the descriptor its training split's cross-validation chose and that one's test value.
"""

import json
import os
import re
import sys
from pathlib import Path

OUT = Path(os.environ.get("OUT", "runs/transfer-report"))
MODES = os.environ.get("MODES", "single stack average").split()
NETS = ("imagewoof", "random-a", "fmnist", "random")


def mode_name(mode: str) -> str:
    """The descriptor of a transfer_report.sh mode, in words."""
    if mode == "single":
        return "single scale Q=256"
    if mode.startswith("q"):
        return f"single scale Q={mode[1:]}"
    how = "stack" if mode.startswith("stack") else "average"
    qs = mode[len(how) :].replace("_", ",") or "256,384,512"
    return f"Q={{{qs}}} " + {"stack": "stacked", "average": "averaged"}[how]


def chosen(prefix: str) -> str:
    """The mode whose training split scored best in cross-validation ('cv'), and its test value."""
    runs = {}
    for mode in MODES:
        f = OUT / f"{prefix}-{mode}.json"
        if f.is_file() and "cv" in (r := json.loads(f.read_text())):
            runs[mode] = r
    if not runs:
        return "-"
    best = max(runs, key=lambda m: runs[m]["cv"])  # ties: the first mode listed
    return f"{100 * runs[best]['value']:.1f} ({mode_name(best)}; cv {100 * runs[best]['cv']:.1f})"


def pct(path: Path, std: bool = False) -> str:
    if not path.is_file():
        return "-"
    r = json.loads(path.read_text())
    return f"{100 * r['value']:.1f} ± {100 * r['std']:.1f}" if std else f"{100 * r['value']:.1f}"


def descriptor_dim(*files: Path) -> str:
    """The descriptor length, read from the first descriptor file's header."""
    from safetensors import safe_open

    for f in files:
        if f.is_file():
            with safe_open(f, "np") as st:
                return str(st.get_slice("features").get_shape()[1])
    return "-"


HEAD = [
    "net", "descriptor", "dim", "hymenoptera mean class recall", "hymenoptera 3 splits x 30/class",
    "critters mAP (area)", "critters mAP (VOC07)",
]  # fmt: skip


def command_cpu(logs: list[str]) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for log in logs:
        for block in Path(log).read_text().split("$ verydeep ")[1:]:
            m = re.search(r"CPU ([\d.]+) s user \+ ([\d.]+) s sys", block)
            if m:
                cpu[block.splitlines()[0]] = float(m.group(1)) + float(m.group(2))
    return cpu


CPU = command_cpu(sys.argv[1:])
if CPU:
    HEAD.append("CPU s")
print("| " + " | ".join(HEAD) + " |")
print("|" + " --- |" * len(HEAD))
for net in NETS:
    for mode in MODES:
        name = mode_name(mode)
        h, v = OUT / f"hym-{net}-{mode}", OUT / f"voc-{net}-{mode}"
        if not h.with_suffix(".json").is_file() and not v.with_suffix(".json").is_file():
            continue
        dim = descriptor_dim(Path(f"{h}-train.safetensors"), Path(f"{v}-train.safetensors"))
        row = [pct(h.with_suffix(".json")), pct(Path(f"{h}-caltech.json"), std=True)]
        row += [pct(v.with_suffix(".json")), pct(Path(f"{v}-voc07.json"))]
        if CPU:
            row.append(f"{sum(v for k, v in CPU.items() if f'-{net}-{mode}' in k):.0f}")
        print(f"| {net} | {name} | {dim} | " + " | ".join(row) + " |")
if CPU:
    print(f"\nall {len(CPU)} commands: {sum(CPU.values()):.0f} s CPU")
if len(MODES) > 1:
    print("\nDescriptor chosen per net by the training split's cross-validated score (cv), test value:\n")
    print("| net | hymenoptera mean class recall | critters mAP (area) |\n| --- | --- | --- |")
    for net in NETS:
        row = [chosen(f"hym-{net}"), chosen(f"voc-{net}")]
        if row != ["-", "-"]:
            print(f"| {net} | " + " | ".join(row) + " |")
