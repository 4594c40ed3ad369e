#!/usr/bin/env bash
# The GPU check, run ON the GPU machine (no Rust, no network there), from the repository root,
# with DIST = what scripts/build-cuda.sh collected (default gpu-dist/):
#
#   scripts/gpu-check.sh [DIST]        (env: BATCH=32 STEPS=5 WARMUP=1 PYTHON=python3)
#
#  0. recreates the paths the binaries baked in at build time: dfdx's OUT_DIR (the `.cuh`
#     headers its run-time NVRTC kernels include) and the CUDA include directory
#     (cuda_fp16.h …), both from DIST; points the loader at the CUDA 13 libraries
#     (libcublas.so.13, libnvrtc.so.13) that ship with the machine's PyTorch, and the driver's
#     libcuda.so.1;
#  1. (a) runs the CUDA tests (tests/cuda.rs): CPU vs CUDA outputs and gradients of every model
#     piece, GASS, the losses and Adam steps, relative error <= 1e-4 in f32;
#  2. (b) trains ViTB16 (the full GA-DMS step) for STEPS steps on synthetic data on the GPU:
#     pairs/s, step time, peak GPU memory (nvidia-smi, sampled every 100 ms);
#  3. (c) the same step in PyTorch on the same card: eager f32, TF32, AMP bf16
#     (benches/torch_gadms_step.py);
#  4. (d) `gadms pretrain --device cuda` (the README's main job, Tiny on the embedded data):
#     wall time and test R1 before/after, next to nothing else (a smoke test of --device);
#  5. prints one table last (also written to $OUT/gpu-check.md when $OUT is set).
# Budget: under 8 minutes on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-gpu-dist}
PY=${PYTHON:-python3}
BATCH=${BATCH:-32}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
LOG=${OUT:-/tmp/gpu-check}
mkdir -p "$LOG"
T0=$(date +%s)
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
timeout 150 "$DIST/cuda-tests" --test-threads=1 --nocapture 2>&1 | tee "$LOG/cuda-tests.log" | grep -E "^\[|test result|panicked|FAILED|error" 
TESTS_RC=${PIPESTATUS[0]}
PARITY=$(grep -c "^\[.*\] ok " "$LOG/cuda-tests.log"); BAD=$(grep -c "^\[.*\] BAD " "$LOG/cuda-tests.log")
WORST=$(grep -E "^\[.*\] (ok|BAD) " "$LOG/cuda-tests.log" | awk '{print $3}' | sort -g | tail -1)
RESULT=$(grep "test result" "$LOG/cuda-tests.log" | tail -1)

# 2. gadms on the GPU, peak memory sampled by nvidia-smi
mem_watch() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$1" 2>/dev/null & echo $!; }
BASE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
say "(b) gadms bench train: ViT-B/16 GA-DMS step, batch $BATCH, $STEPS steps"
W=$(mem_watch "$LOG/mem-gadms.txt")
timeout 180 "$DIST/gadms" bench train --device cuda --preset vit-b-16 --batch "$BATCH" \
    --iters "$STEPS" --warmup "$WARMUP" 2>&1 | tee "$LOG/gadms-train.log"
kill "$W" 2>/dev/null
PEAK=$(sort -n "$LOG/mem-gadms.txt" | tail -1)
grep '^{"' "$LOG/gadms-train.log" | head -1 | "$PY" -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l); r['peak_mem_mib'] = ${PEAK:-0} - ${BASE:-0}; r['device'] = '$CARD'
    print(json.dumps(r))" > "$LOG/rows.jsonl"

# 3. PyTorch, same step and sizes
say "(c) PyTorch: eager f32, TF32, AMP bf16"
timeout 150 "$PY" benches/torch_gadms_step.py --device cuda --preset vit-b-16 --batch "$BATCH" \
    --steps "$STEPS" --warmup "$WARMUP" --modes eager-f32,tf32,amp-bf16 2> "$LOG/torch.err" \
    | tee -a "$LOG/rows.jsonl"
tail -5 "$LOG/torch.err"

# 4. the main job on the GPU
say "(d) gadms pretrain --device cuda (Tiny, embedded data)"
PT0=$(date +%s)
timeout 150 "$DIST/gadms" pretrain --device cuda --overwrite --out "$LOG/pretrain-run" > "$LOG/pretrain.log" 2>&1
PRC=$?
PWALL=$(( $(date +%s) - PT0 ))
grep -E "R1|r1|error" "$LOG/pretrain.log" | grep -v "^\s*$" | tail -8
PRETRAIN=$("$PY" - "$LOG/pretrain-run/metrics.jsonl" "$PRC" "$PWALL" <<'EOF2'
import json, sys
path, rc, wall = sys.argv[1:4]
try:
    ev = [r for r in map(json.loads, open(path)) if 'r1' in r and r.get('split') == 'test']
    first, last = ev[0], ev[-1]
    steps = max(json.loads(l).get("step", 0) for l in open(path))
    print(f"(d) `gadms pretrain --device cuda` (rc {rc}): {steps} steps in {wall} s wall (incl. packing and evaluation); "
          f"test R1 {first['r1']:.2f} -> {last['r1']:.2f}, mAP {last['map']:.2f}")
except Exception as e:
    print(f"(d) `gadms pretrain --device cuda` (rc {rc}, {wall} s): no metrics ({e}); see pretrain.log")
EOF2
)
rm -rf "$LOG/pretrain-run/data"

# 5. the table
say "done"
"$PY" - "$LOG/rows.jsonl" "$CARD" "$TESTS_RC" "$PARITY" "$BAD" "${WORST:-nan}" "$RESULT" "$PRETRAIN" <<'EOF' | tee "$LOG/gpu-check.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
card, rc, ok, bad, worst, result, pretrain = sys.argv[2:9]
print(f"\n### gpu-check on {card}\n")
print(f"(a) CPU vs CUDA parity: {'PASS' if rc == '0' else 'FAIL (rc ' + rc + ')'}: {ok} comparisons within 1e-4, "
      f"{bad} over; worst relative error {worst}; {result.strip()}\n")
g = next((r for r in rows if r.get("impl") == "gadms" and "pairs_per_s" in r), None)
print("| implementation | mode | batch | step s | pairs/s | gadms ÷ this (pairs/s) | peak GPU MiB | GASS fraction |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if "error" in r or "pairs_per_s" not in r:
        print(f"| {r.get('impl')} | {r.get('mode')} | {r.get('batch')} | error: {r.get('error')} | | | | |")
        continue
    ratio = g["pairs_per_s"] / r["pairs_per_s"] if g else float("nan")
    mem = r.get("peak_mem_mib")
    gf = r.get("gass_fraction")
    print(f"| {r['impl']} | {r['mode']} | {r['batch']} | {r['step_s']:.4f} | {r['pairs_per_s']:.1f} | {ratio:.3f} | "
          f"{'–' if mem is None else f'{mem:.0f}'} | {'–' if gf is None else f'{gf:.3f}'} |")
if g is None:
    print("| gadms | f32 | – | did not finish: see gadms-train.log | | | | |")
print(f"\n{pretrain}")
EOF
exit "$TESTS_RC"
