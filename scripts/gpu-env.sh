# Sourced by scripts/gpu-check.sh, and usable on its own on the GPU machine to run any command
# of the CUDA build: recreates the paths the binaries baked in at build time (dfdx's OUT_DIR
# with the `.cuh` headers of its run-time NVRTC kernels, and the CUDA include directory) from
# DIST, and puts the machine's CUDA libraries of the build's major version (DIST/cuda.env: 13 or
# 12; PyTorch's cu130/cu12x wheels or /usr/local/cuda) and the driver's libcuda.so.1 on
# LD_LIBRARY_PATH.
#
#   source scripts/gpu-env.sh gpu-dist && gpu-dist/gadms pretrain --device cuda
DIST=${1:-${DIST:-gpu-dist}}
PY=${PYTHON:-python3}
# 0. baked paths and libraries
while read -r out; do mkdir -p "$out" && cp "$DIST"/cuh/*.cuh "$out/"; done < "$DIST/paths.env"
source "$DIST/include.env"
CUDA_MAJOR=13
[ -f "$DIST/cuda.env" ] && source "$DIST/cuda.env"
export CUDA_MAJOR
mkdir -p "$(dirname "$CUDA_INCLUDE_DIR")"
tar -xzf "$DIST/include.tar.gz" -C "$(dirname "$CUDA_INCLUDE_DIR")"
NVLIB=$("$PY" - "$CUDA_MAJOR" <<'EOF'
import glob, os, sys
so = "libcublas.so." + sys.argv[1]
hits = []
try:
    import nvidia
    for p in nvidia.__path__:
        hits += glob.glob(os.path.join(p, "**", so), recursive=True)
except Exception:
    pass
hits += glob.glob("/usr/local/cuda*/lib*/" + so) + glob.glob("/usr/local/cuda*/targets/*/lib/" + so)
print(os.path.dirname(hits[0]) if hits else "")
EOF
)
[ -n "$NVLIB" ] || { echo "error: no libcublas.so.$CUDA_MAJOR found (PyTorch's CUDA $CUDA_MAJOR wheels or /usr/local/cuda)" >&2; return 2 2>/dev/null || exit 2; }
NVRTC=$(dirname "$(ls "$NVLIB/libnvrtc.so.$CUDA_MAJOR" "$NVLIB/../../cuda_nvrtc/lib/libnvrtc.so.$CUDA_MAJOR" /usr/local/cuda*/lib*/"libnvrtc.so.$CUDA_MAJOR" 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$NVLIB:$NVRTC:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
