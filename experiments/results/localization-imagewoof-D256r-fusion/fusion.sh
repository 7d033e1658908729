# Table 9 analog on the retrained D-256's box nets: fused nets, scored by the D + A classifiers,
# the fusion chosen on train[80%:] like the single nets (never val)
set -e
cd /work/main
V=$HOME/.cache/verydeep; B=$V/loc-iw2-D
CLS="--cls $B/cls/checkpoints/best.safetensors --cls $V/loc-iw2-A/cls/checkpoints/best.safetensors"
tune() { name=$1; shift; args=(); for n in "$@"; do args+=(--loc $B/$n.safetensors); done
  /usr/bin/time -f "%U+%S s CPU, %e s wall: tune $name" .venv/bin/verydeep localize tune \
    --data ../shared/data/critters-voc --split "train[80%:]" $CLS "${args[@]}" \
    --scale-sets "256;384;256,384" --flip --json $V/loc-iw2-fusion/tune-$name.json --show 3; }
tune all4 scr-all pcr-all scr-fc pcr-fc
tune all-layers scr-all pcr-all
tune scr2 scr-all scr-fc
# then each fusion on val with its tuned flags (run by hand, appended to run.log):
#   verydeep localize eval --no-progress --data ../shared/data/critters-voc --split val --train-split "train[:80%]" \
#     $CLS --loc $B/scr-all.safetensors --loc $B/pcr-all.safetensors <tune-all-layers.json's best flags> --json val-all-layers.json
#   (and the same with scr-all + scr-fc and tune-scr2.json's flags for val-scr2.json)
