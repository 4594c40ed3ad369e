#!/usr/bin/env bash
# Builds the CUDA gadms binary and the CUDA test binary on a machine WITHOUT a GPU, and
# collects what the GPU machine needs into one folder (default: gpu-dist/, git-ignored).
#
#   scripts/build-cuda.sh [DIST]
#
# What it does (docs/dfdx.md §4 is the recipe it follows):
#  1. installs the pinned CUDA 13.0.x compiler and libraries from PyPI into $GADMS_CU13
#     (default /opt/cu13; one pip call — `pip --target` replaces the whole tree);
#     nvcc must stay at 13.0.x: newer PTX is refused by a 13.0 driver's JIT;
#  2. a fake `nvidia-smi` (dfdx's build.rs asks it for the compute capability; we say 9.0 =
#     H100/H200) and a link directory with unversioned library names plus a stub libcuda.so
#     (SONAME libcuda.so.1) generated from cudarc's driver symbols — the real one comes with
#     the GPU machine's driver;
#  3. builds `gadms` (feature `cuda`) and the `tests/cuda.rs` test binary into the fixed target
#     directory $GADMS_CUDA_TARGET (default /opt/gadms-cuda-target): dfdx bakes that path
#     (its OUT_DIR, for the `.cuh` headers of its run-time-compiled kernels) and the CUDA
#     include path into the binary, so both must be the same on the GPU machine;
#  4. collects DIST/{gadms, cuda-tests, cuh/, include.tar.gz, paths.env} (< 64 MiB).
# scripts/gpu-check.sh recreates the baked paths from DIST on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${1:-gpu-dist}
CU13=${GADMS_CU13:-/opt/cu13}
TARGET=${GADMS_CUDA_TARGET:-/opt/gadms-cuda-target}
PY=${PYTHON:-python3}
CU=$CU13/nvidia/cu13
SHIM=$CU13/gadms-shim

# 1. toolchain
if ! "$CU/bin/nvcc" --version 2>/dev/null | grep -q "release 13.0"; then
    echo "== installing CUDA 13.0 toolchain wheels into $CU13"
    "$PY" -m pip install --quiet --no-deps --upgrade --target "$CU13" \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cublas==13.0.2.14
fi
"$CU/bin/nvcc" --version | grep release

# 2. shims: fake nvidia-smi, unversioned link names, stub libcuda
mkdir -p "$SHIM/bin" "$SHIM/lib"
printf '#!/bin/sh\necho compute_cap\necho 9.0\n' > "$SHIM/bin/nvidia-smi"
chmod +x "$SHIM/bin/nvidia-smi"
for l in nvrtc cublas cublasLt; do ln -sf "$CU/lib/lib$l.so.13" "$SHIM/lib/lib$l.so"; done
if [ ! -f "$SHIM/lib/libcuda.so" ]; then
    CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15 | head -1)
    grep -ohE "pub fn cu[A-Za-z0-9_]+" "$CUDARC/src/driver/sys.rs" | awk '{print $3}' | sort -u \
        | sed 's/.*/int &(void){return 999;}/' > "$SHIM/lib/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$SHIM/lib/libcuda.so" "$SHIM/lib/cuda_stub.c"
fi

# 3. build (a RUSTFLAGS of its own: keep this target dir apart from the CPU one)
export PATH="$SHIM/bin:$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_COMPUTE_CAP=90
export CARGO_TARGET_DIR="$TARGET" RUSTFLAGS="-L native=$SHIM/lib"
echo "== cargo build --release --features cuda (target $TARGET)"
cargo build --release --features cuda --bin gadms
TEST_BIN=$(cargo test --release --features cuda --test cuda --no-run --message-format=json \
    | "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])' | tail -1)
[ -n "$TEST_BIN" ] || { echo "error: no tests/cuda.rs binary was built" >&2; exit 1; }

# 4. collect
rm -rf "$DIST"; mkdir -p "$DIST/cuh"
cp "$TARGET/release/gadms" "$DIST/gadms"
cp "$TEST_BIN" "$DIST/cuda-tests"
strip "$DIST/gadms" "$DIST/cuda-tests" 2>/dev/null || true
: > "$DIST/paths.env"
for out in "$TARGET"/release/build/dfdx-*/out; do
    ls "$out"/*.cuh >/dev/null 2>&1 || continue
    cp "$out"/*.cuh "$DIST/cuh/"
    echo "$out" >> "$DIST/paths.env"
done
[ -s "$DIST/paths.env" ] || { echo "error: no dfdx OUT_DIR with .cuh headers under $TARGET" >&2; exit 1; }
# The headers NVRTC needs at run time (cuda_fp16.h and what it includes), minus the C++ library.
tar -czf "$DIST/include.tar.gz" -C "$CU" --exclude='include/cccl' include
echo "CUDA_INCLUDE_DIR=$CU/include" > "$DIST/include.env"
du -sh "$DIST" "$DIST"/*
echo "== done: carry $DIST to the GPU machine and run scripts/gpu-check.sh $DIST there"
