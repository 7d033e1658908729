"""Markdown table of the results written by scripts/transfer_report.sh (runs/transfer-report/*.json,
or the folder in OUT, as for the report script).

Usage: [OUT=DIR] [MODES="..."] .venv/bin/python scripts/transfer_table.py [LOG ...]; with the
script's logs (a later log's run of a command replaces an earlier one) a column gives each row's CPU
seconds (user + sys, 8 commands). With several MODES (as given to the report script) a second table
gives, per net, the descriptor its training split's cross-validation chose and that one's test value.
MODES only names the files; each descriptor is described from its training file's own record.
"""

import json
import os
import re
import sys
from pathlib import Path

OUT = Path(os.environ.get("OUT", "runs/transfer-report"))
MODES = os.environ.get("MODES", "single stack average").split()
NETS = ("imagewoof", "random-a", "fmnist", "random")


def describe(*files: Path) -> tuple[str, str]:
    """A descriptor in words and its length, from the first descriptor file's own record (its
    ``info``), so the table never re-reads the report script's mode names."""
    from safetensors import safe_open

    for f in files:
        if f.is_file():
            with safe_open(f, "np") as st:
                d = json.loads(st.metadata()["verydeep"])["info"]["descriptor"]
                dim = str(st.get_slice("features").get_shape()[1])
            qs = ",".join(f"{q:g}" for q in d["scales"])  # 256.0 -> 256 (scales are floats)
            layer = "" if d.get("layer", "fc7") == "fc7" else f", {d['layer']}"
            if len(d["scales"]) == 1:
                return f"single scale Q={qs}{layer}", dim
            return f"Q={{{qs}}} " + {"stack": "stacked", "average": "averaged"}[d["combine"]] + layer, dim
    return "-", "-"


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
    name = describe(OUT / f"{prefix}-{best}-train.safetensors")[0]
    return f"{100 * runs[best]['value']:.1f} ({best}: {name}; cv {100 * runs[best]['cv']:.1f})"


def pct(path: Path, std: bool = False) -> str:
    if not path.is_file():
        return "-"
    r = json.loads(path.read_text())
    return f"{100 * r['value']:.1f} ± {100 * r['std']:.1f}" if std else f"{100 * r['value']:.1f}"


HEAD = [
    "net", "descriptor", "dim", "hymenoptera mean class recall", "hymenoptera 3 splits x 30/class",
    "critters mAP (area)", "critters mAP (VOC07)",
]  # fmt: skip


def command_cpu(logs: list[str]) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for log in logs:
        if not Path(log).is_file():
            sys.exit(f"transfer_table.py: no such log: {log}")
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
        h, v = OUT / f"hym-{net}-{mode}", OUT / f"voc-{net}-{mode}"
        if not h.with_suffix(".json").is_file() and not v.with_suffix(".json").is_file():
            continue
        name, dim = describe(Path(f"{h}-train.safetensors"), Path(f"{v}-train.safetensors"))
        row = [pct(h.with_suffix(".json")), pct(Path(f"{h}-caltech.json"), std=True)]
        row += [pct(v.with_suffix(".json")), pct(Path(f"{v}-voc07.json"))]
        if CPU:
            row.append(f"{sum(v for k, v in CPU.items() if f'-{net}-{mode}' in k):.0f}")
        print(f"| {net} | {mode if name == '-' else name} | {dim} | " + " | ".join(row) + " |")
if CPU:
    print(f"\nall {len(CPU)} commands: {sum(CPU.values()):.0f} s CPU")
if len(MODES) > 1:
    print("\nDescriptor chosen per net by the training split's cross-validated score (cv), test value:\n")
    print("| net | hymenoptera mean class recall | critters mAP (area) |\n| --- | --- | --- |")
    for net in NETS:
        row = [chosen(f"hym-{net}"), chosen(f"voc-{net}")]
        if row != ["-", "-"]:
            print(f"| {net} | " + " | ".join(row) + " |")
