# Sourced ON THE GPU MACHINE by gpu-remote.sh and gpu-demo-sweep.sh (with $STAGE set): what every
# flix binary needs there, the output folder $OUT and the machine's description in it. A missing
# GPU or NVRTC is an error (not a CPU fallback); the CUDA headers are the toolkit's; cuBLAS and
# NVRTC come from the toolkit, else from the wheels torch ships.
export FLIX_REQUIRE_GPU=1 FLIX_NVRTC_REQUIRED=1
export FLIX_CUDA_INCLUDE=${FLIX_CUDA_INCLUDE:-/usr/local/cuda/include}
FLIX_CUDA_LIBS=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib
FLIX_WHEEL_LIBS=$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(r + "/**/lib*.so*", recursive=True)})))
PY
)
export LD_LIBRARY_PATH=$FLIX_CUDA_LIBS:${FLIX_WHEEL_LIBS}:${LD_LIBRARY_PATH:-}

# The card, its driver and torch's CUDA, for the benchmark notes.
flix_machine_info() {
  echo "commit: $(cat "$STAGE/COMMIT" 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
}

OUT=${OUT:-/tmp/flix-gpu-out}
mkdir -p "$OUT"
flix_machine_info > "$OUT/machine.txt"
