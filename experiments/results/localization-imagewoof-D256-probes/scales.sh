cd /work/main
for n in scr-fc pcr-fc scr-all pcr-all; do
  /usr/bin/time -f "%U+%S s CPU, %e s wall: tune $n" .venv/bin/verydeep localize tune --data ../shared/data/critters-voc --split "train[80%:]" --cls /root/.cache/verydeep/loc-imagewoof-D256/cls/checkpoints/best.safetensors --loc /root/.cache/verydeep/loc-imagewoof-D256-lr1e-2/$n.safetensors --scale-sets "256,384;384,512;256,384,512;512" --flip --json /root/.cache/verydeep/loc-imagewoof-D256-scales/tune-$n.json --show 3
done
