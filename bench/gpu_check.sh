#!/usr/bin/env bash
# The GPU check, one prepared run of a few minutes on a machine with an NVIDIA GPU (make
# gpu-check). Every step runs even when one before it failed; the results go to RESULTS
# (default runs/gpu-check): a log and the JSON of each comparison and of the benchmark.
#
#   bench/gpu_check.sh [RESULTS]        PYTHON=... selects the interpreter (default: .venv's,
#                                       else python3); it needs the runtime and its gpu extra
#                                       (pip install '.[gpu]'), onnx and onnxconverter-common.
#
# 1. the bundle validated on CUDA; 2. the test split (seed 3, as make shapes makes it);
# 3. fp32 captions on CUDA against the CPU, token for token; 4. the fp16 bundle, and its CUDA
# captions against fp32 on the CPU; 5. NVDEC's model input against software decoding;
# 6. python -m bench --device cuda (quick plan, capacity up to 256 cameras of 640x480 and
# 1920x1080), then the same capacity with NVDEC decoding.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-runs/gpu-check}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
TEST=${TEST_SPLIT:-data/shapes/test}
mkdir -p "$RESULTS"
LOG="$RESULTS/log.txt"
export PYTHONUNBUFFERED=1
failed=0

step() {
    echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "== failed ($status): $*" | tee -a "$LOG"
        failed=1
    fi
}

step nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step "$PYTHON" -m export.validate models/shapes --device cuda --speed 1 8 64
[ -d "$TEST" ] || step "$PYTHON" -m lrcn.world --out "$TEST" --videos 150 --seed 3 \
    --holdout default --workers "$(nproc)"
step "$PYTHON" -m export.agreement models/shapes models/shapes "$TEST" --devices cpu cuda \
    --out "$RESULTS/fp32-cuda-vs-cpu.json"
step "$PYTHON" -m export.fp16 models/shapes --out "$RESULTS/shapes-fp16"
step "$PYTHON" -m export.agreement models/shapes "$RESULTS/shapes-fp16" "$TEST" \
    --devices cpu cuda --out "$RESULTS/fp16-cuda-vs-fp32-cpu.json"
step "$PYTHON" -m bench.hwaccel --hwaccel cuda examples/shapes/videos "$TEST" \
    --out "$RESULTS/nvdec-input.json"
BENCH=(--quick --device cuda --no-baseline --out "$RESULTS" --video-seconds 20
       --live-seconds 6 --capacity-seconds 6 --max-streams 256
       --capacity-sizes 640x480 1920x1080)
step "$PYTHON" -m bench "${BENCH[@]}" --name gpu-quick
step "$PYTHON" -m bench "${BENCH[@]}" --hwaccel cuda --name gpu-quick-nvdec
rm -rf "$RESULTS/shapes-fp16"  # 19 MB, made again in seconds
exit "$failed"
