#!/usr/bin/env bash
# Issue 16: does pool3's lead on hymenoptera (retrained D-256 over its init) replicate with the
# retrained A-256 and its init? One single-thread process per net.
cd /work/main
V=~/.cache/verydeep
export RANDOM_A=$V/transfer-random-A256 IMAGEWOOF=$V/iw-src/A-256/checkpoints/best.safetensors
export OMP_NUM_THREADS=1 DATASETS=hym OUT=$V/transfer-A-pool3 LAYER=pool3
NETS=imagewoof bash scripts/transfer_report.sh > $V/transfer-A-pool3-iw.log 2>&1 &
NETS=random-a bash scripts/transfer_report.sh > $V/transfer-A-pool3-ra.log 2>&1 &
wait
echo done > $V/trA-pool3.done
