"""Markdown tables of the report written by experiments/localization.sh.

Usage: python scripts/localization_table.py OUTDIR   (the script's second argument)
Prints the merge settings chosen on train[80%:], the Table 8 analog (centre crop, ground-truth
class) and the full-protocol table on val, from OUTDIR's tune-*.json and val-*.json.

       python scripts/localization_table.py --choose OUTDIR [OUTDIR ...]
Every net (or fusion) of those runs that has both a tune-X.json and a val-X.json, sorted by its
top-1 error on train[80%:]; the lowest there is the choice (all of them when several tie), and
val is only read, never used to choose.
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
FUSED = {  # the fusions (boxes of several nets pooled) in experiments/results/*-fusion/ and *-seeds/
    "all4": "fusion of the four",
    "all-layers": "fusion: SCR + PCR, all layers",
    "scr2": "fusion: SCR all layers + FC only",
    "scr-3seeds": "fusion: SCR all layers, seeds 0-2",
    "pcr-3seeds": "fusion: PCR all layers, seeds 0-2",
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


def choose(outs: list[Path]) -> None:
    rows = []
    for out in outs:
        for t in sorted(out.glob("tune-*.json")):
            v = out / ("val-" + t.name[len("tune-") :])
            if v.is_file():
                held, val = json.loads(t.read_text())["best"]["top1"], json.loads(v.read_text())
                rows.append((held, out.name, t.stem[len("tune-") :], val["dense"]["top1"]))
    if not rows:
        sys.exit("--choose: no run folder has a tune-X.json with its val-X.json")
    rows.sort(key=lambda r: r[0])
    names = NETS | FUSED
    print("| run | net | top-1 on train[80%:] (%) | top-1 on val (%) |\n| --- | --- | --- | --- |")
    for held, run, net, val in rows:
        mark = " **(chosen)**" if held == rows[0][0] else ""
        print(f"| {run} | {names.get(net, net)}{mark} | {pct(held)} | {pct(val)} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--choose"]:
        choose([Path(a) for a in sys.argv[2:]])
    else:
        main(Path(sys.argv[1]))
