#!/usr/bin/env bash
# The device check: the one command to run when a GPU is lent (issues 19, 43, 45). It ends inside
# its budget (7 min by default: GPU_CHECK_BUDGET seconds), writes under 1 MiB to $OUT (step logs cut
# to their last 64 KB, the runs' config/log/result JSON, the bench and probe JSON; weights stay in
# $WORK) and exits non-zero if any step failed or any device test was skipped.
#
# How to run it on a GPU machine:
#   1. here, once:   scripts/gpu_check.sh --make-data     # gpu_data/: 1,000 Imagewoof photographs
#                                                         # and Fashion-MNIST's 4 files (~45 MB)
#   2. the device:   run(command="scripts/gpu_check.sh", carry=["gpu_data"], timeout_s=540)
#      (/work/.library/device; a plain `bash scripts/gpu_check.sh` on any CUDA machine with torch)
#   3. record what it prints in docs/BENCHMARKS.md ("GPU"), fix what failed, run it again.
# The GPU machine's python3 has torch 2.11 (CUDA 13), torchvision 0.26 and no simplejpeg; the code
# runs from src/ (PYTHONPATH), nothing is installed there.
#
#   scripts/gpu_check.sh --device cpu    # here: every step at toy sizes (tests/test_gpu_check.py)
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
MAKE_DATA=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --make-data) MAKE_DATA=1; shift ;;
        *) echo "gpu_check: unknown argument $1 (--device cuda|cpu, --make-data)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu_check_runs}   # run directories (GBs of VGG-16 weights): never $OUT
DATA=${VERYDEEP_GPU_DATA:-gpu_data}
BUDGET=${GPU_CHECK_BUDGET:-420}
mkdir -p "$OUT" "$WORK"

make_data() {  # 80 training and 20 held-out photographs per Imagewoof class, and Fashion-MNIST
    local src=../shared/data/imagewoof-160 fm=${FMNIST_SRC:-/usr/share/datasets/fashion-mnist}
    [ -d "$src" ] || { echo "gpu_check: $src not found: cannot make $DATA" >&2; return 1; }
    [ -f "$fm/train-images-idx3-ubyte.gz" ] || { echo "gpu_check: no Fashion-MNIST in $fm" >&2; return 1; }
    rm -rf "$DATA"
    for split_n in train:80 val:20; do
        local split=${split_n%%:*} n=${split_n##*:}
        for cls in "$src/train"/*/; do  # both from train: imagewoof-160/val has fewer per class
            local dst="$DATA/photos/$split/$(basename "$cls")"
            mkdir -p "$dst"
            if [ "$split" = train ]; then
                find "$cls" -maxdepth 1 -type f | sort | head -n "$n" | xargs -I{} cp {} "$dst/"
            else
                find "$cls" -maxdepth 1 -type f | sort | tail -n "$n" | xargs -I{} cp {} "$dst/"
            fi
        done
    done
    mkdir -p "$DATA/fashion-mnist" && cp "$fm"/*.gz "$DATA/fashion-mnist/"
    echo "gpu_check: $DATA: $(find "$DATA/photos" -type f | wc -l) photographs, $(du -sh "$DATA" | cut -f1)"
}
if [ "$MAKE_DATA" = 1 ] || [ ! -d "$DATA/photos" ]; then make_data || exit 2; fi
[ "$MAKE_DATA" = 1 ] && exit 0
export VERYDEEP_FMNIST="$(cd "$DATA" && pwd)/fashion-mnist"

# what the package needs beyond torch: a machine without them fails here in one line, not later
MISSING=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in ('torch', 'torchvision', 'safetensors', 'tqdm', 'numpy', 'PIL', 'matplotlib') if u.find_spec(m) is None))")
if [ -n "$MISSING" ]; then echo "gpu_check: this Python lacks $MISSING: nothing can run" >&2; exit 2; fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: --device cuda, but torch sees no CUDA device here: nothing to check" >&2
    exit 2
fi
if [ "$DEVICE" = cpu ]; then  # toy sizes: the same commands, seconds each
    NET=(--set model.arch=A --set model.width_mult=0.125 --set model.fc_width=64 --set model.crop_size=32)
    STEPS=24; COMM_STEPS=4; BATCH=16; BENCH=(--quick --rounds 1); WORKERS=0
else  # full-width VGG-16 at the paper's crop, bf16 autocast (native on the GPU), channels_last
    NET=(--set model.arch=D --set train.channels_last=true)
    STEPS=120; COMM_STEPS=30; BATCH=64; BENCH=(--rounds 3 --no-compile); WORKERS=8
fi
PER_EPOCH=$(( 800 / BATCH ))  # 800 training photographs
TRAIN=(--no-progress --set data.dataset=imagefolder --set "data.root=$DATA/photos" --set "train.device=$DEVICE"
       --set data.val_fraction=0 --set train.eval_test=false --set "optim.batch_size=$BATCH"
       --set "data.workers=$WORKERS" --set model.init=glorot --set optim.schedule=cosine
       --set train.save_epochs=false "${NET[@]}")

declare -a SUMMARY
FAILED=0
T0=$SECONDS
step() {  # step NAME LIMIT COMMAND...: run under a timeout within the budget; keep the log's tail
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - (SECONDS - T0) )) t0=$SECONDS
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -le 5 ]; then SUMMARY+=("$name: NOT RUN (budget spent)"); FAILED=1; return; fi
    echo "=== gpu_check: $name (at most $limit s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    tail -c 65536 "$WORK/$name.log" > "$OUT/$name.log"
    if [ $rc = 0 ]; then SUMMARY+=("$name: ok ($((SECONDS - t0)) s)")
    else
        [ $rc = 124 ] && why="timed out" || why="exit $rc"
        SUMMARY+=("$name: FAILED, $why ($((SECONDS - t0)) s; see $OUT/$name.log)"); FAILED=1
        tail -n 20 "$WORK/$name.log"
    fi
}
keep() {  # keep RUN: the run directory's small files into $OUT/RUN
    mkdir -p "$OUT/$1"
    for f in config.json log.csv result.json; do [ -f "$WORK/$1/$f" ] && cp "$WORK/$1/$f" "$OUT/$1/"; done
}
steady_img_s() {  # median images/s of a run's epochs after the first (worker start-up, autotuning)
    "$PY" - "$WORK/$1/log.csv" <<'PYEOF' 2>/dev/null || echo "?"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{statistics.median(float(r['img_s']) for r in (rows[1:] or rows)):.1f}")
PYEOF
}
no_skips() {  # no_skips LOG: fail where pytest skipped a device test (a check that did not run)
    if grep -Eq "[0-9]+ skipped" "$1"; then echo "gpu_check: device tests were skipped:" >&2; grep -E "^SKIPPED" "$1" >&2; return 1; fi
}

"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
# the one test about having no GPU is left out on a GPU, and the TF32 one (a GPU's) on the CPU:
# each skips itself where it cannot run
DESELECT=(--deselect tests/test_cuda.py::test_tf32_is_asked_for_and_differs_from_fp32)
[ "$DEVICE" = cuda ] && DESELECT=(--deselect tests/test_cuda.py::test_asking_for_cuda_without_one_is_one_line)
step tests 150 env VERYDEEP_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -rs -m cuda tests/test_cuda.py -p no:cacheprovider "${DESELECT[@]}"
no_skips "$WORK/tests.log" || { SUMMARY+=("tests: FAILED, device tests skipped"); FAILED=1; }
step probe 90 "$PY" scripts/gpu_probe.py --device "$DEVICE"
[ -f "$WORK/probe.log" ] && grep -q '^{' "$WORK/probe.log" && sed -n '/^{/,$p' "$WORK/probe.log" > "$OUT/probe.json"
step bench 120 "$PY" -m verydeep bench --device "$DEVICE" --only inference training perceptual \
    --data "$DATA/photos/val" "${BENCH[@]}" --save "$OUT/bench.json"
rm -rf "$WORK/train" "$WORK/ddp"
step train 120 "$PY" -m verydeep train "${TRAIN[@]}" --set "train.epochs=$(( (STEPS + PER_EPOCH - 1) / PER_EPOCH ))" \
    --set "train.max_steps=$STEPS" --set "train.out_dir=$WORK/train"
keep train
for comm in fp32 fp16 bf16 powersgd; do  # one rank under torchrun: NCCL (gloo on the CPU), DDP, each hook
    extra=(); [ $comm = powersgd ] && extra=(--set dist.powersgd_start=10)
    rm -rf "$WORK/ddp-$comm"
    step "ddp-$comm" 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m verydeep train \
        "${TRAIN[@]}" --set "train.max_steps=$COMM_STEPS" --set train.epochs=100 --set "dist.grad_comm=$comm" \
        "${extra[@]}" --set "train.out_dir=$WORK/ddp-$comm"
    keep "ddp-$comm"
    grep -q "data parallel: 1 rank" "$WORK/ddp-$comm.log" || { SUMMARY+=("ddp-$comm: FAILED, not run as a process group"); FAILED=1; }
done

echo
echo "gpu_check on $DEVICE ($((SECONDS - T0)) s of a $BUDGET s budget):"
printf '  %s\n' "${SUMMARY[@]}"
echo "  training: $STEPS steps of batch $BATCH, steady $(steady_img_s train) img/s; torchrun 1 rank fp32 $(steady_img_s ddp-fp32), powersgd $(steady_img_s ddp-powersgd) img/s"
[ -f "$OUT/probe.json" ] && cat "$OUT/probe.json"
if [ -f "$OUT/bench.json" ]; then
    "$PY" -c "import json,sys; from verydeep.bench.report import format_report; print(format_report(json.load(open(sys.argv[1]))))" "$OUT/bench.json"
fi
echo "  \$OUT holds $(du -sk "$OUT" | cut -f1) KB"
exit $FAILED
