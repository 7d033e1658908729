#!/usr/bin/env bash
# The localisation report of docs/LOCALIZATION.md, end to end, on critters-voc:
#   1. a classifier with `verydeep train` on VOC image-level labels (train[:80%]),
#   2. four box-regression nets initialised from it (SCR/PCR x all layers/FC only), same split,
#   3. merge settings and test scales chosen on the held-out train[80%:] (`localize tune`),
#   4. everything reported once on val with those settings (never used for a choice).
# Usage: bash experiments/localization.sh [VOCROOT] [OUTDIR]     (about 15 CPU-minutes on 2 cores)
#        INIT=~/.cache/verydeep/study-imagewoof/D-256/checkpoints/best.safetensors ARCH=D \
#          bash experiments/localization.sh ../shared/data/critters-voc runs/loc-imagewoof
#   With INIT the classifier is fine-tuned from that Imagewoof net, as Appendix A starts from the
#   classification nets; its shape (arch, width, FC width, crop) is read from INIT's metadata.
#   CLS_ONLY=1 stops after step 1 (a classifier for another run's SCORE_CLS ensemble);
#   CLS=<classifier checkpoint> skips step 1; SCORE_CLS="<checkpoint> ..." scores the boxes in
#   steps 3-4 with these classifiers' mean posteriors (default: CLS alone); BOXES_FROM=<an earlier
#   OUTDIR> (with that run's CLS) skips step 2 and tunes and reports its box nets;
#   LOC_LR=<rate> sets the box nets' rate (default 0.01);
#   LOC_DROPS=0.5,0.75 divides it by 10 after those fractions of the steps (default: constant);
#   BOX_SIZE=log regresses log width and height (R-CNN's; default linear, the paper's);
#   STEPS_ALL / STEPS_FC their steps when all layers / the FC layers only are trained (600 each;
#   an FC-only step costs about a third of an all-layer one: no backward through the convs).
set -euo pipefail
D=${1:-../shared/data/critters-voc}
OUT=${2:-runs/loc}
VD=${VERYDEEP:-verydeep}
mkdir -p "$OUT"
t() { local cmd="$*"; /usr/bin/time -f "%U+%S s CPU, %e s wall: ${cmd//%/%%}" "$@"; }  # % doubled: time reads it as a format
# the box nets' rate: LOC_LR (0.01 by default; a trained source may want the paper's 1e-3)
LOC_LR=${LOC_LR:-0.01}
if [ -n "${INIT:-}" ]; then  # the source net's shape; a tenth of the rate, the source's weights
  read -r -a SHAPE <<< "$(python3 -c "import json,sys,struct; f=open(sys.argv[1],'rb'); \
h=json.loads(f.read(struct.unpack('<Q',f.read(8))[0])); m=json.loads(h['__metadata__']['verydeep'])['model']; \
print(' '.join(f'--set model.{k}={m[k]}' for k in ('arch','width_mult','fc_width','crop_size')))" "$INIT")"
  NET=("${SHAPE[@]}" --set "train.init_from=$INIT" --set optim.lr=0.001)
else  # from scratch, as docs/LOCALIZATION.md's first numbers
  NET=(--set model.arch=D_bn --set model.width_mult=0.25 --set model.fc_width=256 --set model.crop_size=64
       --set model.init=kaiming --set data.normalize=standardize)
fi

# 1. classifier: D with batch norm (plain D does not leave chance level on 233 photographs in
#    this budget), Kaiming init, standardised inputs, S = 384 paper units at crop 64 (110 px).
#    No validation split: 23 photographs cannot time the schedule (it stayed at chance and the
#    rate was cut after 56 steps); the rate is divided when the training loss stops falling.
if [ -z "${CLS:-}" ]; then  # CLS=<a classifier from an earlier run>: skip step 1
t $VD train --no-progress \
  --set data.dataset=voc --set "data.root=$D" --set "data.train_split=train[:80%]" --set data.test_split=val \
  "${NET[@]}" --set data.scale=[384] \
  --set optim.batch_size=32 --set data.val_fraction=0 --set optim.patience=5 --set optim.max_reductions=2 \
  --set train.epochs=90 --set data.workers=0 --set "train.out_dir=$OUT/cls"
CLS=$OUT/cls/checkpoints/best.safetensors
fi
[ -z "${CLS_ONLY:-}" ] || exit 0

# the classifiers that score the boxes (several: a classification ensemble)
read -r -a SCORE <<< "${SCORE_CLS:-$CLS}"
CLSARGS=()
for c in "${SCORE[@]}"; do CLSARGS+=(--cls "$c"); done

# 2. the Table 8 nets (BOXES_FROM: an earlier run's, not trained again)
BOXES=${BOXES_FROM:-$OUT}
[ -n "${BOXES_FROM:-}" ] || for v in "scr all" "pcr all" "scr fc" "pcr fc"; do
  set -- $v
  t $VD localize train --no-progress --data "$D" --split "train[:80%]" --init "$CLS" --out "$OUT/$1-$2.safetensors" \
    --head "$1" --finetune "$2" --steps "$([ "$2" = fc ] && echo "${STEPS_FC:-600}" || echo "${STEPS_ALL:-600}")" \
    --lr "$LOC_LR" --lr-drops "${LOC_DROPS:-}" --box-size "${BOX_SIZE:-linear}"
done

# 3. choose merging and scales on held-out photographs, per net
for n in scr-all pcr-all scr-fc pcr-fc; do
  t $VD localize tune --no-progress --data "$D" --split "train[80%:]" "${CLSARGS[@]}" --loc "$BOXES/$n.safetensors" \
    --scale-sets "256;384;256,384" --flip --json "$OUT/tune-$n.json" --show 5
done

# 4. report on val: the tuned settings of each net, and the defaults for comparison
for n in scr-all pcr-all scr-fc pcr-fc; do
  FLAGS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['flags'])" "$OUT/tune-$n.json")
  # shellcheck disable=SC2086
  t $VD localize eval --no-progress --data "$D" --split val --train-split "train[:80%]" "${CLSARGS[@]}" \
    --loc "$BOXES/$n.safetensors" $FLAGS --json "$OUT/val-$n.json"
done
t $VD localize eval --no-progress --data "$D" --split val --train-split "train[:80%]" "${CLSARGS[@]}" \
  --loc "$BOXES/scr-all.safetensors" --json "$OUT/val-scr-all-defaults.json"
