cd /work/main
D=../shared/data/critters-voc
one() { h=$1
  /usr/bin/time -f "%U+%S s CPU, %e s wall: train $h-all" .venv/bin/verydeep localize train --data $D --split "train[:80%]" --init /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors --out /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/$h-all.safetensors --head $h --finetune all --steps 600 --lr 0.001 --box-size log 2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it"
  .venv/bin/verydeep localize tune --data $D --split "train[80%:]" --cls /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors --loc /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/$h-all.safetensors --scale-sets "256;384;256,384" --flip --json /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/tune-$h-all.json --show 3 2>/dev/null
  FLAGS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['flags'])" /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/tune-$h-all.json)
  .venv/bin/verydeep localize eval --data $D --split val --train-split "train[:80%]" --cls /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors --loc /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/$h-all.safetensors $FLAGS --json /root/.cache/verydeep/loc-imagewoof-D256-lr1e-3-log/val-$h-all.json 2>/dev/null
}
one $1
