"""Markdown table of the results written by scripts/transfer_report.sh (runs/transfer-report/*.json)."""

import json
from pathlib import Path

OUT = Path("runs/transfer-report")
MODES = {
    "single": "single scale Q=256",
    "stack": "Q={256,384,512} stacked",
    "average": "Q={256,384,512} averaged",
    "grey": "Q={256,384,512} stacked, grey input",
}


def pct(path: Path, std: bool = False) -> str:
    if not path.is_file():
        return "-"
    r = json.loads(path.read_text())
    return f"{100 * r['value']:.1f} ± {100 * r['std']:.1f}" if std else f"{100 * r['value']:.1f}"


HEAD = [
    "net", "descriptor", "dim", "hymenoptera mean class recall", "hymenoptera 3 splits x 30/class",
    "critters mAP (area)", "critters mAP (VOC07)",
]  # fmt: skip
print("| " + " | ".join(HEAD) + " |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for net in ("fmnist", "random"):
    for mode, name in MODES.items():
        h, v = OUT / f"hym-{net}-{mode}", OUT / f"voc-{net}-{mode}"
        dim = 768 if mode in ("stack", "grey") else 256
        row = [pct(h.with_suffix(".json")), pct(Path(f"{h}-caltech.json"), std=True)]
        row += [pct(v.with_suffix(".json")), pct(Path(f"{v}-voc07.json"))]
        print(f"| {net} | {name} | {dim} | " + " | ".join(row) + " |")
