#!/usr/bin/env bash
# Reproduces every number of docs/TRANSFER.md. Run from the repository root; the nets:
#   imagewoof  an Imagewoof study net (IMAGEWOOF=its checkpoint; default the study's A-256)
#   random-a   that net's architecture at its Glorot initialisation (made here: one-step run, init kept)
#   fmnist     verydeep train --config experiments/transfer_fmnist.toml (its best checkpoint)
#   random     that run's init.safetensors (the Fashion-MNIST net's shape, untrained)
# Environment: NETS="imagewoof random-a" limits the nets, DATASETS="voc" the data sets, MODES the
# descriptors (see scales() below), LAYER=pool5 (any `verydeep features --layer`) describes with
# that layer instead of FC7, CS sets the SVMs' C grid; OUT moves the outputs, RANDOM_A the random-a
# run (one per Imagewoof net shape), FMNIST the Fashion-MNIST run's folder; KEEP=1 skips each
# command whose output file is already there (an interrupted report goes on where it stopped).
# Prints each command with its CPU time (user + sys, this process and its children).
set -euo pipefail
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src
D=../shared/data
OUT=${OUT:-runs/transfer-report}
RANDOM_A=${RANDOM_A:-runs/transfer-random-a}
FMNIST=${FMNIST:-runs/transfer-fmnist}  # the Fashion-MNIST run's train.out_dir
CS=${CS:-"0.01 0.1 1 10 100"}  # the SVM's C grid (verydeep transfer --cs)
mkdir -p "$OUT"
TIMEFORMAT='    CPU %3U s user + %3S s sys, wall %3R s'
DATASETS=${DATASETS:-"hym voc"}
NETS=${NETS:-"imagewoof random-a fmnist random"}
LAYER=${LAYER:-fc7}
IMAGEWOOF=${IMAGEWOOF:-$HOME/.cache/verydeep/study-imagewoof/A-256/checkpoints/best.safetensors}
want() { [[ " $DATASETS " == *" $1 "* ]]; }
vd() {
  local a prev="" made=""
  for a in "$@"; do [[ $prev == --out || $prev == --json ]] && made=$a; prev=$a; done
  if [[ ${KEEP:-0} == 1 && -n $made && -f $made ]]; then  # outputs are written whole or not at all
    echo "# kept $made"
    return
  fi
  echo "\$ verydeep $*"; time "$PY" -m verydeep "$@" 2>/dev/null
}
ckpt() {
  case $1 in
    imagewoof) echo "$IMAGEWOOF" ;;
    random-a) echo "$RANDOM_A/checkpoints/init.safetensors" ;;
    fmnist) echo "$FMNIST/checkpoints/best.safetensors" ;;
    random) echo "$FMNIST/checkpoints/init.safetensors" ;;
  esac
}
if [[ " $NETS " == *" random-a "* && ! -f $(ckpt random-a) ]]; then
  # the Imagewoof net's shape (from its metadata) and init, untrained: train.save_init keeps the
  # weights before step 1
  SHAPE=$("$PY" -c "import json,sys; from safetensors import safe_open; \
m=json.loads(safe_open(sys.argv[1],'pt').metadata()['verydeep'])['model']; \
print(' '.join(f'--set model.{k}={m[k]}' for k in ('arch','width_mult','fc_width','crop_size')))" "$IMAGEWOOF")
  # shellcheck disable=SC2086  # SHAPE is a list of flags
  "$PY" -m verydeep train --no-progress --set data.dataset=imagefolder --set data.root=$D/imagewoof-160 \
    $SHAPE --set model.init=glorot --set train.save_init=true --set train.max_steps=1 \
    --set data.val_fraction=0 --set train.eval_test=false --set optim.batch_size=8 \
    --set "train.out_dir=$RANDOM_A" > /dev/null
fi

# descriptor modes: single (Q=256), stack and average (Q=256,384,512), qN (one scale, Q=N),
# stackA_B_C and averageA_B_C (those scales)
MODES=${MODES:-"single stack average"}
scales() {
  case $1 in
    single) echo "--scales 256" ;;
    stack | average) echo "--scales 256 384 512 --combine $1" ;;
    q*) echo "--scales ${1#q}" ;;
    stack* | average*) local m=${1%%[0-9]*}; echo "--scales ${1#"$m"} --combine $m" | tr _ ' ' ;;
    *) echo "unknown mode $1" >&2; exit 2 ;;
  esac
}
for mode in $MODES; do scales "$mode" > /dev/null; done  # an unknown mode stops here, not midway
for net in $NETS; do
  ck=$(ckpt "$net")
  for mode in $MODES; do
    for split in train val; do
      want hym && vd features "$ck" $D/hymenoptera --split $split --out $OUT/hym-$net-$mode-$split.safetensors \
        $(scales "$mode") --layer "$LAYER" --threads 1
      want voc && vd features "$ck" $D/critters-voc --split $split --out $OUT/voc-$net-$mode-$split.safetensors \
        $(scales "$mode") --layer "$LAYER" --threads 1
    done
    h=$OUT/hym-$net-$mode; v=$OUT/voc-$net-$mode
    want hym && vd transfer $h-train.safetensors $h-val.safetensors --cs $CS --json $h.json
    want hym && vd transfer $h-train.safetensors $h-val.safetensors --cs $CS --per-class 30 --splits 3 --json $h-caltech.json
    want voc && vd transfer $v-train.safetensors $v-val.safetensors --cs $CS --ap area --json $v.json \
      --pr-curves $OUT/pr-$net-$mode
    want voc && vd transfer $v-train.safetensors $v-val.safetensors --cs $CS --ap voc07 --json $v-voc07.json
  done
done
