#!/usr/bin/env bash
# Issue 16: hymenoptera with conv-block descriptors (pool4, then pool3) of the retrained D-256 and
# its init, one single-thread process per net, side by side.
cd /work/main
V=~/.cache/verydeep
export RANDOM_A=$V/transfer-random-D256r IMAGEWOOF=$V/iw-src/D-256/checkpoints/best.safetensors
export OMP_NUM_THREADS=1 DATASETS=hym
for layer in pool4 pool3; do
  export OUT=$V/transfer-D256r-$layer LAYER=$layer
  NETS=imagewoof bash scripts/transfer_report.sh > $V/transfer-D256r-$layer-iw.log 2>&1 &
  NETS=random-a bash scripts/transfer_report.sh > $V/transfer-D256r-$layer-ra.log 2>&1 &
  wait
done
echo done > $V/trD-pool.done
