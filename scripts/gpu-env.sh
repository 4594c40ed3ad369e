# Sourced by scripts/gpu-check.sh, and usable on its own on the GPU machine to run any command
# of the CUDA build: recreates the paths the binaries baked in at build time (dfdx's OUT_DIR
# with the `.cuh` headers of its run-time NVRTC kernels, and the CUDA include directory) from
# DIST, and puts the machine's CUDA 13 libraries (PyTorch's cu130 wheels or /usr/local/cuda) and
# the driver's libcuda.so.1 on LD_LIBRARY_PATH.
#
#   source scripts/gpu-env.sh gpu-dist && gpu-dist/gadms pretrain --device cuda
DIST=${1:-${DIST:-gpu-dist}}
PY=${PYTHON:-python3}
# 0. baked paths and libraries
while read -r out; do mkdir -p "$out" && cp "$DIST"/cuh/*.cuh "$out/"; done < "$DIST/paths.env"
source "$DIST/include.env"
mkdir -p "$(dirname "$CUDA_INCLUDE_DIR")"
tar -xzf "$DIST/include.tar.gz" -C "$(dirname "$CUDA_INCLUDE_DIR")"
NVLIB=$("$PY" - <<'EOF'
import glob, os
hits = []
try:
    import nvidia
    for p in nvidia.__path__:
        hits += glob.glob(os.path.join(p, "**", "libcublas.so.13"), recursive=True)
except Exception:
    pass
hits += glob.glob("/usr/local/cuda*/lib*/libcublas.so.13") + glob.glob("/usr/local/cuda*/targets/*/lib/libcublas.so.13")
print(os.path.dirname(hits[0]) if hits else "")
EOF
)
[ -n "$NVLIB" ] || { echo "error: no libcublas.so.13 found (PyTorch cu130 wheels or /usr/local/cuda)" >&2; return 2 2>/dev/null || exit 2; }
NVRTC=$(dirname "$(ls "$NVLIB"/libnvrtc.so.13 "$NVLIB"/../../cuda_nvrtc/lib/libnvrtc.so.13 /usr/local/cuda*/lib*/libnvrtc.so.13 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$NVLIB:$NVRTC:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
