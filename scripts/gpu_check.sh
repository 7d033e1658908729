#!/usr/bin/env bash
# The device check (issue 19, item 5): one script, inside 8 minutes on one H200, printing what it
# measured. It runs the cuda-marked tests, `verydeep bench` on the device, a few hundred steps of
# full-width VGG-16 training on photographs, and `torchrun --nproc_per_node=1` (nccl on CUDA).
#
#   scripts/gpu_check.sh                 # on the GPU machine (python3 there holds torch)
#   scripts/gpu_check.sh --device cpu    # here: the same steps at toy sizes (tests/test_gpu_check.py)
#
# Photographs: gpu_slice/ (git-ignored, carried to the device machine), made here from
# ../shared/data/imagewoof-160 by `scripts/gpu_check.sh --make-slice` (about 3 MB).
# Results land in ${OUT:-/tmp/gpu_check} (bench JSON, logs); a summary is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
MAKE_SLICE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --make-slice) MAKE_SLICE=1; shift ;;
        *) echo "gpu_check: unknown argument $1 (--device cuda|cpu, --make-slice)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RESULTS=${OUT:-/tmp/gpu_check}
SLICE=${VERYDEEP_GPU_SLICE:-gpu_slice}
mkdir -p "$RESULTS"

make_slice() {  # 30 training and 10 held-out photographs per class of Imagewoof, copied as they are
    local src=../shared/data/imagewoof-160
    [ -d "$src" ] || { echo "gpu_check: $src not found: cannot make $SLICE" >&2; return 1; }
    rm -rf "$SLICE"
    for split_n in train:30 val:10; do
        local split=${split_n%%:*} n=${split_n##*:}
        for cls in "$src/$split"/*/; do
            local dst="$SLICE/$split/$(basename "$cls")"
            mkdir -p "$dst"
            find "$cls" -maxdepth 1 -type f | sort | head -n "$n" | xargs -I{} cp {} "$dst/"
        done
    done
    echo "gpu_check: $SLICE: $(find "$SLICE" -type f | wc -l) photographs, $(du -sh "$SLICE" | cut -f1)"
}
if [ "$MAKE_SLICE" = 1 ] || [ ! -d "$SLICE" ]; then make_slice || exit 2; fi

if [ "$DEVICE" = cpu ]; then  # toy sizes: the same commands, seconds each
    NET=(--set model.arch=A --set model.width_mult=0.125 --set model.fc_width=64 --set model.crop_size=32)
    STEPS=3; DDP_STEPS=2; BATCH=8; BENCH=(--quick --rounds 1)
else  # full-width VGG-16 at the paper's crop, bf16 autocast (native on the GPU)
    NET=(--set model.arch=D --set train.channels_last=true)
    STEPS=300; DDP_STEPS=50; BATCH=64; BENCH=(--rounds 3 --no-compile)
fi
TRAIN=(--no-progress --set data.dataset=imagefolder --set "data.root=$SLICE" --set "train.device=$DEVICE"
       --set data.val_fraction=0 --set train.eval_test=false --set "optim.batch_size=$BATCH"
       --set data.workers=8 --set model.init=glorot "${NET[@]}")

declare -a SUMMARY
FAILED=0
step() {  # step NAME COMMAND...: run, time, remember the outcome
    local name=$1; shift
    local t0=$SECONDS
    echo "=== gpu_check: $name: $*"
    if "$@" > "$RESULTS/$name.log" 2>&1; then
        SUMMARY+=("$name: ok ($((SECONDS - t0)) s)")
    else
        SUMMARY+=("$name: FAILED ($((SECONDS - t0)) s; see $RESULTS/$name.log)"); FAILED=1
        tail -n 20 "$RESULTS/$name.log"
    fi
}
img_s() {  # images/s of a run's last logged (partial) epoch
    "$PY" -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(f\"{float(r[-1]['img_s']):.1f}\")" "$1/log.csv" 2>/dev/null || echo "?"
}

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step tests env VERYDEEP_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
step bench "$PY" -m verydeep bench --device "$DEVICE" --data "$SLICE/val" "${BENCH[@]}" --save "$RESULTS/bench.json"
rm -rf "$RESULTS/train" "$RESULTS/ddp"
step train "$PY" -m verydeep train "${TRAIN[@]}" --set "train.max_steps=$STEPS" --set "train.out_dir=$RESULTS/train"
step torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m verydeep train "${TRAIN[@]}" \
    --set "train.max_steps=$DDP_STEPS" --set "train.out_dir=$RESULTS/ddp"

echo
echo "gpu_check on $DEVICE:"
printf '  %s\n' "${SUMMARY[@]}"
echo "  training: $STEPS steps of batch $BATCH at $(img_s "$RESULTS/train") img/s; torchrun (1 rank): $(img_s "$RESULTS/ddp") img/s"
if [ -f "$RESULTS/bench.json" ]; then
    "$PY" -c "import json,sys; from verydeep.bench.report import format_report; print(format_report(json.load(open(sys.argv[1]))))" "$RESULTS/bench.json"
fi
exit $FAILED
