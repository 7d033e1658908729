cd /work/main
D=../shared/data/critters-voc
for s in 256 512; do
  /usr/bin/time -f "%U+%S s CPU: train scr-fc S=$s" .venv/bin/verydeep localize train --data $D --split "train[:80%]" --init /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors --out /root/.cache/verydeep/loc-imagewoof-D256-multiS/scr-fc-s$s.safetensors --head scr --finetune fc --steps 600 --lr 0.01 --scale $s 2>/dev/null
done
tune() { name=$1; shift; /usr/bin/time -f "%U+%S s CPU: tune $name" .venv/bin/verydeep localize tune --data $D --split "train[80%:]" --cls /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors "$@" --scale-sets "256;384;256,384" --flip --json /root/.cache/verydeep/loc-imagewoof-D256-multiS/tune-$name.json --show 2 2>/dev/null; }
tune s256 --loc /root/.cache/verydeep/loc-imagewoof-D256-multiS/scr-fc-s256.safetensors
tune s512 --loc /root/.cache/verydeep/loc-imagewoof-D256-multiS/scr-fc-s512.safetensors
tune s256@256+s384@384 --loc /root/.cache/verydeep/loc-imagewoof-D256-multiS/scr-fc-s256.safetensors@256 --loc /root/.cache/verydeep/loc-imagewoof-D256-lr1e-2/scr-fc.safetensors@384
tune s384@384+s512@512 --loc /root/.cache/verydeep/loc-imagewoof-D256-lr1e-2/scr-fc.safetensors@384 --loc /root/.cache/verydeep/loc-imagewoof-D256-multiS/scr-fc-s512.safetensors@512
