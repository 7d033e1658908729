#!/usr/bin/env bash
# Issue 16: seeds 1 and 2 of the retrained D-256's all-layer box nets (log sizes, lr 0.01, 600
# steps, as experiments/localization.sh trains seed 0), then the fusions of the three seeds (the
# paper's Table 9 pools nets; here the same recipe thrice, to average out the box nets' variance),
# chosen on train[80%:] and scored by the D + A classifiers like loc-iw2-D-cls-DA.
set -euo pipefail
cd /work/main
V=$HOME/.cache/verydeep; B=$V/loc-iw2-D; O=$V/loc-iw2-seeds; D=../shared/data/critters-voc
export OMP_NUM_THREADS=2
t() { local cmd="$*"; /usr/bin/time -f "%U+%S s CPU, %e s wall: ${cmd//%/%%}" "$@"; }
while [ ! -f $V/trD.done ]; do sleep 20; done
for seed in 1 2; do for head in scr pcr; do
  [ -f $O/$head-all-s$seed.safetensors ] || t .venv/bin/verydeep localize train --no-progress --data $D \
    --split "train[:80%]" --init $B/cls/checkpoints/best.safetensors --out $O/$head-all-s$seed.safetensors \
    --head $head --finetune all --steps 600 --lr 0.01 --box-size log --seed $seed
done; done
CLS=(--cls $B/cls/checkpoints/best.safetensors --cls $V/loc-iw2-A/cls/checkpoints/best.safetensors)
for head in scr pcr; do
  L=(--loc $B/$head-all.safetensors --loc $O/$head-all-s1.safetensors --loc $O/$head-all-s2.safetensors)
  t .venv/bin/verydeep localize tune --no-progress --data $D --split "train[80%:]" "${CLS[@]}" "${L[@]}" \
    --scale-sets "256;384;256,384" --flip --json $O/tune-$head-3seeds.json --show 3
  FLAGS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['flags'])" $O/tune-$head-3seeds.json)
  # shellcheck disable=SC2086
  t .venv/bin/verydeep localize eval --no-progress --data $D --split val --train-split "train[:80%]" "${CLS[@]}" \
    "${L[@]}" $FLAGS --json $O/val-$head-3seeds.json
done
echo done > $O/done
