#!/usr/bin/env bash
# The GPU check, run ON the GPU machine (no Rust, no network there), from the repository root,
# with DIST = what scripts/build-cuda.sh collected (default gpu-dist/):
#
#   scripts/gpu-check.sh [DIST]   (env: BATCHES="32 128" PRECISIONS="f32 tf32 bf16" STEPS=3
#                                   WARMUP=1 PYTHON=python3)
#
#  0. recreates the paths the binaries baked in at build time: dfdx's OUT_DIR (the `.cuh`
#     headers its run-time NVRTC kernels include) and the CUDA include directory
#     (cuda_fp16.h …), both from DIST; points the loader at the CUDA 13 libraries
#     (libcublas.so.13, libnvrtc.so.13) that ship with the machine's PyTorch, and the driver's
#     libcuda.so.1;
#  1. (a) runs the CUDA tests (tests/cuda.rs): CPU vs CUDA outputs and gradients of every model
#     piece, every fused kernel (QuickGELU, LayerNorm, attention), GASS, the losses and Adam
#     steps, relative error <= 1e-4 in f32; the TF32 and bf16 products against the CPU product
#     of inputs rounded the way the tensor cores round them; the bf16 copies that the backward
#     keeps under bf16;
#  2. (b) the full ViT-B/16 GA-DMS step for STEPS steps on synthetic data on the GPU, for each
#     batch of BATCHES and precision of PRECISIONS: pairs/s, step time, peak GPU memory
#     (nvidia-smi, sampled every 100 ms, minus the idle value);
#  3. (c) the same step in PyTorch on the same card at the same batches: eager f32, TF32, AMP
#     bf16 (benches/torch_gadms_step.py), peak allocated and reserved memory;
#     (e) `gadms bench model --device cuda`: gallery and caption embedding rates in f32 and bf16,
#     and the ICFG-size evaluation time they give (19,848 images and captions);
#  4. (d) `gadms pretrain --device cuda` (the README's main job, Tiny on the embedded data) in
#     f32 and in bf16: wall time and test R1 (bf16 passes within 2 points of f32);
#  5. prints one table last (scripts/gpu_check_table.py; also written to $OUT/gpu-check.md when
#     $OUT is set).
# Budget: under 8 minutes on an H100/H200 (BUDGET=420 s caps every step's timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-gpu-dist}
PY=${PYTHON:-python3}
BATCHES=${BATCHES:-32 128}
PRECISIONS=${PRECISIONS:-f32 tf32 bf16}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
LOG=${OUT:-/tmp/gpu-check}
mkdir -p "$LOG"
T0=$(date +%s)
# The whole check stops within BUDGET seconds: each step's timeout is cut to what is left.
BUDGET=${BUDGET:-420}
cap() { local left=$(( T0 + BUDGET - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
say() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

[ -x "$DIST/gadms" ] && [ -x "$DIST/cuda-tests" ] || {
    echo "error: $DIST/gadms or $DIST/cuda-tests missing: run scripts/build-cuda.sh on the build machine and carry $DIST" >&2
    exit 2
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG/card.txt"
CARD=$(head -1 "$LOG/card.txt" | cut -d, -f1)

# 0. baked paths and libraries (scripts/gpu-env.sh)
source scripts/gpu-env.sh "$DIST" || exit 2
say "libraries: cublas in $NVLIB, nvrtc in $NVRTC; headers in $CUDA_INCLUDE_DIR"
ldd "$DIST/gadms" | grep -E "cuda|cublas|nvrtc"

# 1. CPU vs CUDA parity
say "(a) CUDA parity tests"
timeout "$(cap 180)" "$DIST/cuda-tests" --test-threads=1 --nocapture 2>&1 | tee "$LOG/cuda-tests.log" | grep -E "^\[|test result|panicked|FAILED|error" 
TESTS_RC=${PIPESTATUS[0]}
PARITY=$(grep -c "^\[.*\] ok " "$LOG/cuda-tests.log"); BAD=$(grep -c "^\[.*\] BAD " "$LOG/cuda-tests.log")
WORST=$(grep -E "^\[.*\] (ok|BAD) " "$LOG/cuda-tests.log" | sed -E 's/^\[[^]]*\] (ok|BAD) +([^ ]+).*/\2/' | sort -g | tail -1)
RESULT=$(grep "test result" "$LOG/cuda-tests.log" | tail -1)
# A failed parity test leaves the timings to dfdx's composition (GADMS_FUSED=0), so the run
# still measures the precisions; the table says so. One row (the first batch, bf16) is then
# also timed with the fused kernels on, marked unverified: what they would give once fixed.
# Two tests do not concern the fused kernels: when only they fail, the fused kernels stay on.
# `reduced_precision_products_round_their_inputs` checks cuBLAS's rounding model (the table
# shows its figures); `bf16_copies_for_the_backward_match_the_host` turns the bf16 copies off
# (GADMS_BF16_COPIES=0), so bf16 keeps f32 activations as before.
FAILED=$(grep -E "^test .+ \.\.\. FAILED$" "$LOG/cuda-tests.log" | awk '{print $2}' | sed 's/.*:://' | sort -u)
OTHERS=$(grep -vxE "reduced_precision_products_round_their_inputs|bf16_copies_for_the_backward_match_the_host" <<< "$FAILED")
if [ "$TESTS_RC" != 0 ] && [ -n "$FAILED" ] && [ -z "$OTHERS" ]; then
    if grep -qx bf16_copies_for_the_backward_match_the_host <<< "$FAILED"; then
        export GADMS_BF16_COPIES=0
        RESULT="$RESULT; the bf16 copies' test failed: the timings below ran with GADMS_BF16_COPIES=0"
        say "the bf16 copies' test failed: timing with GADMS_BF16_COPIES=0"
    fi
    if grep -qx reduced_precision_products_round_their_inputs <<< "$FAILED"; then
        RESULT="$RESULT; the reduced-precision products do not match the rounding model (kernels table)"
    fi
elif [ "$TESTS_RC" != 0 ]; then
    export GADMS_FUSED=0
    RESULT="$RESULT; the timings below ran with GADMS_FUSED=0 (fused kernels off)"
    say "parity tests failed: timing with GADMS_FUSED=0"
fi

# 2. gadms on the GPU, peak memory sampled by nvidia-smi; 3. PyTorch at the same batch
mem_watch() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$1" 2>/dev/null & echo $!; }
BASE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
: > "$LOG/rows.jsonl"
for B in $BATCHES; do
    for P in $PRECISIONS; do
        say "(b) gadms bench train: ViT-B/16 GA-DMS step, batch $B, precision $P, $STEPS steps"
        W=$(mem_watch "$LOG/mem-gadms-$B-$P.txt")
        timeout "$(cap 90)" "$DIST/gadms" bench train --device cuda --preset vit-b-16 --batch "$B" \
            --precision "$P" --iters "$STEPS" --warmup "$WARMUP" > "$LOG/gadms-$B-$P.log" 2>&1
        RC=$?
        kill "$W" 2>/dev/null; wait "$W" 2>/dev/null
        tail -2 "$LOG/gadms-$B-$P.log"
        PEAK=$(sort -n "$LOG/mem-gadms-$B-$P.txt" | tail -1)
        "$PY" scripts/gpu_check_table.py row "$LOG/gadms-$B-$P.log" "$P" "$B" "$RC" \
            "$(( ${PEAK:-0} - ${BASE:-0} ))" "$CARD" >> "$LOG/rows.jsonl"
    done
    if [ "${GADMS_FUSED:-1}" = 0 ] && [ "$B" = "${BATCHES%% *}" ]; then
        say "(b') batch $B, bf16, fused kernels on although a parity test failed (unverified)"
        W=$(mem_watch "$LOG/mem-gadms-$B-fused.txt")
        GADMS_FUSED=1 timeout "$(cap 90)" "$DIST/gadms" bench train --device cuda --preset vit-b-16 \
            --batch "$B" --precision bf16 --iters "$STEPS" --warmup "$WARMUP" > "$LOG/gadms-$B-fused.log" 2>&1
        RC=$?
        kill "$W" 2>/dev/null; wait "$W" 2>/dev/null
        tail -2 "$LOG/gadms-$B-fused.log"
        PEAK=$(sort -n "$LOG/mem-gadms-$B-fused.txt" | tail -1)
        "$PY" scripts/gpu_check_table.py row "$LOG/gadms-$B-fused.log" bf16-fused-unverified "$B" "$RC" \
            "$(( ${PEAK:-0} - ${BASE:-0} ))" "$CARD" >> "$LOG/rows.jsonl"
    fi
    say "(c) PyTorch at batch $B: eager f32, TF32, AMP bf16"
    timeout "$(cap 120)" "$PY" benches/torch_gadms_step.py --device cuda --preset vit-b-16 --batch "$B" \
        --steps "$STEPS" --warmup "$WARMUP" --modes eager-f32,tf32,amp-bf16 2> "$LOG/torch-$B.err" \
        | tee -a "$LOG/rows.jsonl"
    tail -3 "$LOG/torch-$B.err"
done

# 3b. inference: the towers' embedding rates, and the ICFG-size evaluation they give
say "(e) gadms bench model --device cuda: embedding 256 images / captions per call, f32 and bf16"
for P in f32 bf16; do
    timeout "$(cap 60)" "$DIST/gadms" bench model --device cuda --preset vit-b-16 --batch 8 \
        --embed-batch 256 --iters 3 --precision "$P" > "$LOG/model-$P.log" 2>&1
    grep -E "embedding|ICFG|error" "$LOG/model-$P.log" | sed "s/^/[$P] /" | tee -a "$LOG/inference.txt"
done

# 4. the main job on the GPU, in f32 and in bf16
pretrain() {  # PRECISION -> "rc wall_s"
    local t0
    t0=$(date +%s)
    timeout "$(cap 90)" "$DIST/gadms" pretrain --device cuda --precision "$1" --overwrite \
        --out "$LOG/pretrain-$1" > "$LOG/pretrain-$1.log" 2>&1
    echo "$? $(( $(date +%s) - t0 ))"
}
say "(d) gadms pretrain --device cuda --precision f32, then bf16 (Tiny, embedded data)"
read -r RC32 WALL32 <<< "$(pretrain f32)"
read -r RC16 WALL16 <<< "$(pretrain bf16)"
PRETRAIN=$("$PY" scripts/gpu_check_table.py pretrain "$LOG" "$RC32" "$WALL32" "$RC16" "$WALL16")
rm -rf "$LOG"/pretrain-*/data

# 5. the table
say "done"
grep -E "^\[(fused kernels|precision|bf16 copies)\]" "$LOG/cuda-tests.log" > "$LOG/kernels.txt"
"$PY" scripts/gpu_check_table.py table "$LOG/rows.jsonl" "$CARD" "$TESTS_RC" "$PARITY" "$BAD" \
    "${WORST:-nan}" "$RESULT" "$PRETRAIN" "$LOG/kernels.txt" "$LOG/inference.txt" | tee "$LOG/gpu-check.md"
exit "$TESTS_RC"
