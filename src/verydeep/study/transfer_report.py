"""The transfer plan's results block (``study/transfer_study.py``), from the summaries alone.

Two tables. The first: each ``table`` source at ``table_descriptor``, trained against its
untrained twin on every photo set (each set's first protocol), the trained value in bold where
it is ahead. The second: for each net, the descriptor of ``choose_from`` that the training
split's cross-validation scored best (the test split chooses nothing), and its test value.

Example:
    >>> from verydeep.study.transfer_report import pair
    >>> pair({"value": 0.907}, {"value": 0.793})
    '**90.7** / 79.3'
"""

from __future__ import annotations

from .transfer_study import Source, TransferSpec, entry_names, run_plan  # noqa: F401 - cli/plan_study

BEGIN, END = "<!-- transfer-study results: begin -->", "<!-- transfer-study results: end -->"
Spec = TransferSpec  # the name every plan module gives its spec (cli/plan_study.py)
METRIC = {"recall": "recall", "caltech": "recall (3 x 30/class)", "map": "mAP", "voc07": "mAP (VOC07)"}


def pair(trained: dict | None, twin: dict | None) -> str:
    """'trained / twin' in percent, the trained value bold where it is ahead; '-' for a missing one."""
    a = "-" if trained is None else f"{100 * trained['value']:.1f}"
    b = "-" if twin is None else f"{100 * twin['value']:.1f}"
    if trained is not None and twin is not None and trained["value"] > twin["value"]:
        a = f"**{a}**"
    return f"{a} / {b}"


def cv_score(r: dict | None) -> float | None:
    """The training split's cross-validated score at the chosen C: recorded as ``cv``, or, where
    one C serves every class, that C's entry of ``held_out`` (the same number)."""
    if r is None or "cv" in r:
        return None if r is None else r["cv"]
    one_c = "C" in r and not isinstance(r["C"], list)
    return r.get("held_out", {}).get(str(float(r["C"]))) if one_c else None


def chosen(spec: TransferSpec, results: dict, source: Source, net: str, dataset: str) -> str:
    """The test value of the descriptor whose training split's cross-validated score is best
    (ties: the first listed), and its name; '-' unless every candidate has that score."""
    protocol = next(d for d in spec.datasets if d.name == dataset).protocols[0]
    runs = [results.get(f"{source.name}/{net}/{dataset}-{d}-{protocol}") for d in spec.choose_from]
    cvs = [cv_score(r) for r in runs]
    if not runs or None in cvs:
        return "-"
    best = max(range(len(runs)), key=lambda i: (cvs[i], -i))
    return f"{100 * runs[best]['value']:.1f} ({spec.choose_from[best]})"


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def _head(first: str, heads: list[str]) -> list[str]:
    return [_row(first, heads), "|" + " --- |" * (len(heads) + 1)]


def first_table(spec: TransferSpec, results: dict) -> list[str]:
    """The ``table`` sources at ``table_descriptor``, trained / twin on every photo set."""
    lines = _head(
        spec.table_head,
        [f"{d.name} {METRIC[d.protocols[0]]}: trained / untrained twin" for d in spec.datasets],
    )
    for s in (s for s in spec.sources if s.name in spec.table):
        keys = [f"{d.name}-{spec.table_descriptor}-{d.protocols[0]}" for d in spec.datasets]
        cells = [pair(results.get(f"{s.name}/trained/{k}"), results.get(f"{s.name}/twin/{k}")) for k in keys]
        lines.append(_row(s.label or s.name, cells))
    return lines


def choice_table(spec: TransferSpec, results: dict) -> list[str]:
    """Per ``table`` source and net, the descriptor of ``choose_from`` its training split chose."""
    lines = ["", f"The descriptor each net's training split chose by cross-validation among "
             f"{', '.join(spec.choose_from)}, and its test value:", ""]  # fmt: skip
    lines += _head(spec.table_head, [f"{d.name}: trained / untrained twin" for d in spec.datasets])
    for s in (s for s in spec.sources if s.name in spec.table):
        cells = [f"{chosen(spec, results, s, 'trained', d.name)} / {chosen(spec, results, s, 'twin', d.name)}"
                 for d in spec.datasets]  # fmt: skip
        lines.append(_row(s.label or s.name, cells))
    if any("| - /" in line or "/ - |" in line for line in lines):
        lines += ["", "-: the summaries lack the training split's cross-validated score (older runs "
                  "recorded it only where one C serves every class)."]  # fmt: skip
    return lines


def other_table(spec: TransferSpec, results: dict) -> list[str]:
    """Every source outside ``table`` (other layers, say): trained / twin per descriptor, on its
    first photo set's first protocol."""
    others = [s for s in spec.sources if s.name not in spec.table]
    if not others:
        return []
    descs = [d for d in spec.descriptors if any(d in s.descriptors for s in others)]
    lines = ["", "The other sources, each on its first photo set (trained / untrained twin):", ""]
    lines += _head("source", descs)
    sets = {d.name: d for d in spec.datasets}
    for s in others:
        d = sets[s.datasets[0]]
        keys = {x: f"{d.name}-{x}-{d.protocols[0]}" for x in s.descriptors}
        cells = [pair(results.get(f"{s.name}/trained/{keys[x]}"), results.get(f"{s.name}/twin/{keys[x]}"))
                 if x in keys else "" for x in descs]  # fmt: skip
        lines.append(_row(f"{s.label or s.name} ({d.name} {METRIC[d.protocols[0]]})", cells))
    return lines


def render_block(spec: TransferSpec, results: dict, command: str) -> str:
    """The Markdown between ``BEGIN`` and ``END`` (inclusive)."""
    lines = [BEGIN, "", *first_table(spec, results)]
    lines += choice_table(spec, results) if spec.choose_from else []
    lines += other_table(spec, results)
    where = f"; {spec.hardware}" if spec.hardware else ""
    lines += ["", f"`{command}` ({len(results)} summaries in `{spec.results_dir or spec.out_dir}`{where})."]
    return "\n".join([*lines, "", END])
