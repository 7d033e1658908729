"""Markdown tables of the report written by experiments/localization.sh.

Usage: python scripts/localization_table.py OUTDIR   (the script's second argument)
Prints the merge settings chosen on train[80%:], the Table 8 analog (centre crop, ground-truth
class) and the full-protocol table on val, from OUTDIR's tune-*.json and val-*.json.
"""

import json
import sys
from pathlib import Path

NETS = {
    "scr-all": "SCR, all layers",
    "pcr-all": "PCR, all layers",
    "scr-fc": "SCR, FC only",
    "pcr-fc": "PCR, FC only",
}
BASELINES = {
    "whole/gt_class": "whole photograph as the box | ground truth",
    "whole/classifier_class": "whole photograph as the box | classifier (dense)",
    "mean/gt_class": "mean box of train[:80%] | ground truth",
    "mean/classifier_class": "mean box of train[:80%] | classifier (dense)",
}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def dense_cells(v: dict) -> str:
    return f"{pct(v['dense']['top1'])} | {pct(v['dense'].get('top2', 0))}"


def main(out: Path) -> None:
    val = {
        n: json.loads((out / f"val-{n}.json").read_text()) for n in NETS if (out / f"val-{n}.json").is_file()
    }
    tune = {
        n: json.loads((out / f"tune-{n}.json").read_text())
        for n in NETS
        if (out / f"tune-{n}.json").is_file()
    }
    print("| net | chosen on train[80%:] | its top-1 error there (%) |\n| --- | --- | --- |")
    for n, t in tune.items():
        print(f"| {NETS[n]} | `{t['best']['flags']}` | {pct(t['best']['top1'])} |")
    print("\n| head | FC layers only | all layers |\n| --- | --- | --- |")
    centre = {n: next(iter(v["centre"].values())) for n, v in val.items()}
    for head in ("scr", "pcr"):
        print(f"| {head.upper()} | {pct(centre[head + '-fc'])} | {pct(centre[head + '-all'])} |")
    print("\n| method | class from | top-1 loc. error (%) | top-2 (%) |\n| --- | --- | --- | --- |")
    first = next(iter(val.values()))
    for key, name in BASELINES.items():
        print(f"| baseline: {name} | {pct(first['baselines'][key])} | |")
    for n, v in val.items():
        print(f"| dense + merging, {NETS[n]} | classifier | {dense_cells(v)} |")
    d = out / "val-scr-all-defaults.json"
    if d.is_file():
        v = json.loads(d.read_text())
        print(f"| dense + merging, SCR all layers, default merging | classifier | {dense_cells(v)} |")
    print(f"\nclassification top-1 error (dense) on val: {pct(first['classification_top1_error'])}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
