#!/usr/bin/env bash
# Builds the CUDA gadms binary and the CUDA test binary, on a machine with or WITHOUT a GPU,
# and collects what the GPU machine needs into one folder (default: gpu-dist/, git-ignored).
#
#   scripts/build-cuda.sh [--cuda 13|12] [--arch 80,86,89,90] [--toolkit DIR] [DIST]
#
#   --cuda 13    (default) CUDA 13.0: the pinned compiler and libraries from PyPI (below), or
#                the toolkit given by --toolkit. Runs with an NVIDIA driver >= 580.
#   --cuda 12    CUDA 12.x for drivers 525-575: needs --toolkit (an installed CUDA 12 toolkit,
#                e.g. /usr/local/cuda-12.4); PyPI's CUDA 12 wheels carry no nvcc.
#   --arch LIST  the compute capabilities to run on (80 A100, 86 RTX 30xx/A40, 89 RTX 40xx/L4/
#                L40, 90 H100/H200; default 80,86,89,90). The kernels are compiled to PTX for the
#                lowest of them, which the driver compiles on for each newer card at first
#                load; cuBLAS brings its own code for every card.
#   --toolkit DIR  use the CUDA toolkit at DIR (DIR/bin/nvcc, DIR/include, DIR/lib64) instead
#                of the PyPI wheels. On a machine with a normal toolkit and a GPU, a plain
#                `CUDA_ROOT=DIR CUDA_COMPUTE_CAP=80 cargo build --release --features cuda` works
#                too (docs/gpu.md); this script adds the test binary and the DIST folder.
#
# What it does (docs/dfdx.md §4 is the recipe it follows):
#  1. CUDA 13 without --toolkit: installs the pinned CUDA 13.0.x compiler and libraries from
#     PyPI into $GADMS_CU13 (default /opt/cu13; one pip call: `pip --target` replaces the
#     whole tree); nvcc must stay at 13.0.x, as newer PTX is refused by a 13.0 driver's JIT;
#  2. a fake `nvidia-smi` (dfdx's build.rs asks it for the compute capability; we answer the
#     lowest of --arch) and a link directory with unversioned library names plus a stub
#     libcuda.so (SONAME libcuda.so.1) generated from cudarc's driver symbols: the real one
#     comes with the GPU machine's driver;
#  3. builds `gadms` (feature `cuda`) and the `tests/cuda.rs` test binary into the fixed target
#     directory $GADMS_CUDA_TARGET (default /opt/gadms-cuda-target): dfdx bakes that path
#     (its OUT_DIR, for the `.cuh` headers of its run-time-compiled kernels) and the CUDA
#     include path into the binary, so both must be the same on the GPU machine;
#  4. collects DIST/{gadms, cuda-tests, cuh/, include.tar.gz, paths.env, cuda.env} (< 64 MiB).
# scripts/gpu-check.sh recreates the baked paths from DIST on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CUDA_MAJOR=13
ARCHS=80,86,89,90
TOOLKIT=
DIST=gpu-dist
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda) CUDA_MAJOR=${2:?--cuda needs 12 or 13}; shift 2 ;;
        --arch) ARCHS=${2:?--arch needs a list such as 80,86,89,90}; shift 2 ;;
        --toolkit) TOOLKIT=${2:?--toolkit needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) DIST=$1; shift ;;
    esac
done
case "$CUDA_MAJOR" in 12|13) ;; *) echo "error: --cuda $CUDA_MAJOR: use 12 or 13" >&2; exit 2 ;; esac
CAP=
for a in ${ARCHS//,/ }; do
    a=${a#sm_}; a=${a//./}
    case "$a" in 80|86|87|89|90|100|120) ;; *) echo "error: --arch $a: use compute capabilities such as 80,86,89,90" >&2; exit 2 ;; esac
    if [ -z "$CAP" ] || [ "$a" -lt "$CAP" ]; then CAP=$a; fi
done
[ -n "$CAP" ] || { echo "error: --arch is empty" >&2; exit 2; }
CU13=${GADMS_CU13:-/opt/cu13}
TARGET=${GADMS_CUDA_TARGET:-/opt/gadms-cuda-target}
PY=${PYTHON:-python3}
SHIM=${GADMS_CUDA_SHIM:-/opt/gadms-cuda-shim-$CUDA_MAJOR}

# 1. toolchain: CU = a CUDA root with bin/nvcc, include/ and the libraries in lib or lib64
if [ -n "$TOOLKIT" ]; then
    CU=$TOOLKIT
elif [ "$CUDA_MAJOR" = 12 ]; then
    echo "error: --cuda 12 needs --toolkit DIR (an installed CUDA 12 toolkit): PyPI's CUDA 12 wheels have no nvcc" >&2
    exit 2
else
    CU=$CU13/nvidia/cu13
    if ! "$CU/bin/nvcc" --version 2>/dev/null | grep -q "release 13.0"; then
        echo "== installing CUDA 13.0 toolchain wheels into $CU13"
        "$PY" -m pip install --quiet --no-deps --upgrade --target "$CU13" \
            nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
            nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
            nvidia-cublas==13.0.2.14
    fi
fi
"$CU/bin/nvcc" --version | grep release | grep -q "release $CUDA_MAJOR\." || {
    echo "error: $CU/bin/nvcc is not CUDA $CUDA_MAJOR ($("$CU/bin/nvcc" --version | grep release))" >&2
    exit 2
}
"$CU/bin/nvcc" --version | grep release
LIBDIR=$CU/lib
[ -e "$LIBDIR/libcublas.so.$CUDA_MAJOR" ] || LIBDIR=$CU/lib64
[ -e "$LIBDIR/libcublas.so.$CUDA_MAJOR" ] || { echo "error: no libcublas.so.$CUDA_MAJOR in $CU/lib or $CU/lib64" >&2; exit 2; }

# 2. shims: fake nvidia-smi, unversioned link names, stub libcuda
mkdir -p "$SHIM/bin" "$SHIM/lib"
printf '#!/bin/sh\necho compute_cap\necho %s\n' "${CAP:0:-1}.${CAP: -1}" > "$SHIM/bin/nvidia-smi"
chmod +x "$SHIM/bin/nvidia-smi"
for l in nvrtc cublas cublasLt; do ln -sf "$LIBDIR/lib$l.so.$CUDA_MAJOR" "$SHIM/lib/lib$l.so"; done
if [ ! -f "$SHIM/lib/libcuda.so" ]; then
    CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15 | head -1)
    grep -ohE "pub fn cu[A-Za-z0-9_]+" "$CUDARC/src/driver/sys.rs" | awk '{print $3}' | sort -u \
        | sed 's/.*/int &(void){return 999;}/' > "$SHIM/lib/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$SHIM/lib/libcuda.so" "$SHIM/lib/cuda_stub.c"
fi
echo "== CUDA $CUDA_MAJOR from $CU; PTX for compute_$CAP (runs on: $ARCHS and newer)"

# 3. build (a RUSTFLAGS of its own: keep this target dir apart from the CPU one)
export PATH="$SHIM/bin:$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_COMPUTE_CAP=$CAP
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
tar -czhf "$DIST/include.tar.gz" -C "$CU" --exclude='include/cccl' include
echo "CUDA_INCLUDE_DIR=$CU/include" > "$DIST/include.env"
printf 'CUDA_MAJOR=%s\nCUDA_ARCHS=%s\nCUDA_PTX=compute_%s\n' "$CUDA_MAJOR" "$ARCHS" "$CAP" > "$DIST/cuda.env"
du -sh "$DIST" "$DIST"/*
echo "== done: carry $DIST to the GPU machine and run scripts/gpu-check.sh $DIST there"
