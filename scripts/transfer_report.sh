#!/usr/bin/env bash
# Reproduces every number of docs/TRANSFER.md. Run from the repository root after
#   verydeep train --config experiments/transfer_fmnist.toml
# (its best checkpoint is the "fmnist" net, its init.safetensors the "random" one).
# Prints each command with its CPU time (user + sys, this process and its children).
set -euo pipefail
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src
D=../shared/data
OUT=runs/transfer-report
mkdir -p "$OUT"
TIMEFORMAT='    CPU %3U s user + %3S s sys, wall %3R s'
DATASETS=${DATASETS:-"hym voc"}  # e.g. DATASETS=voc to redo the critters-voc half only
want() { [[ " $DATASETS " == *" $1 "* ]]; }
ckpt() { [[ $1 == fmnist ]] && echo runs/transfer-fmnist/checkpoints/best.safetensors \
         || echo runs/transfer-fmnist/checkpoints/init.safetensors; }
vd() { echo "\$ verydeep $*"; time "$PY" -m verydeep "$@" 2>/dev/null; }

declare -A SCALES=([single]="--scales 256" [stack]="--scales 256 384 512 --combine stack"
                   [average]="--scales 256 384 512 --combine average")
for net in fmnist random; do
  ck=$(ckpt $net)
  for mode in single stack average; do
    for split in train val; do
      want hym && vd features "$ck" $D/hymenoptera --split $split --out $OUT/hym-$net-$mode-$split.safetensors \
        ${SCALES[$mode]} --threads 1
      want voc && vd features "$ck" $D/critters-voc --split $split --out $OUT/voc-$net-$mode-$split.safetensors \
        ${SCALES[$mode]} --threads 1
    done
    h=$OUT/hym-$net-$mode; v=$OUT/voc-$net-$mode
    want hym && vd transfer $h-train.safetensors $h-val.safetensors --json $h.json
    want hym && vd transfer $h-train.safetensors $h-val.safetensors --per-class 30 --splits 3 --json $h-caltech.json
    want voc && vd transfer $v-train.safetensors $v-val.safetensors --ap area --json $v.json
    want voc && vd transfer $v-train.safetensors $v-val.safetensors --ap voc07 --json $v-voc07.json
  done
done

# Ablation: grey input (the Fashion-MNIST net only ever saw R = G = B), stacked scales.
for net in fmnist random; do
  ck=$(ckpt $net)
  for split in train val; do
    want hym && vd features "$ck" $D/hymenoptera --split $split --out $OUT/hym-$net-grey-$split.safetensors \
      ${SCALES[stack]} --grey --threads 1
    want voc && vd features "$ck" $D/critters-voc --split $split --out $OUT/voc-$net-grey-$split.safetensors \
      ${SCALES[stack]} --grey --threads 1
  done
  h=$OUT/hym-$net-grey; v=$OUT/voc-$net-grey
  want hym && vd transfer $h-train.safetensors $h-val.safetensors --json $h.json
  want hym && vd transfer $h-train.safetensors $h-val.safetensors --per-class 30 --splits 3 --json $h-caltech.json
  want voc && vd transfer $v-train.safetensors $v-val.safetensors --ap area --json $v.json
  want voc && vd transfer $v-train.safetensors $v-val.safetensors --ap voc07 --json $v-voc07.json
done
