#!/usr/bin/env bash
# The prepared script for a lent GPU machine: bf16 training (bench/gpu_check.py) and a GPU FAISS index
# (bench/gpu_index.py), then, when .gpu_data/ carries a session benchmark's training pairs, the model step of
# the session benchmark on the GPU (bench/gpu_sessions.py). Each stage is bounded in time and writes its
# log and JSON to $OUT. Run from the repository root there:
#   GPU_SESSION_VARIANTS='{"softmax": "full"}' bash bench/gpu_device_run.sh
#
# That machine has torch, pytorch-lightning, numpy, pandas and pyarrow (CUDA 13) but no msgspec and no
# FAISS, and nothing can be downloaded on it. So wheels travel in .whl/ (git-ignored), made here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl msgspec==0.22.0 faiss-gpu-cu12
# faiss-gpu-cu12 links libcudart.so.12 / libcublas.so.12 / libcublasLt.so.12, and NVIDIA's cuBLAS 12 wheel
# (~600 MB) cannot travel. .whl/shim/ carries libcudart.so.12 (from nvidia-cuda-runtime-cu12: the CUDA 13
# driver runs 12.x runtimes) and a 16 kB libcublas.so.12 built from bench/gpu_shim/ that forwards the eight
# cuBLAS calls FAISS makes to the machine's libcublas.so.13 (same C ABI for these calls):
#   gcc -shared -fPIC -O2 -o .whl/shim/libcublas.so.12 -Wl,-soname,libcublas.so.12 \
#       -Wl,--version-script=bench/gpu_shim/cublas.map bench/gpu_shim/cublas_shim.c -ldl
#   (and an empty libcublasLt.so.12: FAISS needs the file, not a symbol from it)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTD=${OUT:-/tmp/gpu-out}
mkdir -p "$OUTD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if ! ldconfig -p | grep -q 'libcublas.so.12 '; then
  lib13=$(find /usr/local /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)
  echo "no libcublas.so.12 here; shim over ${lib13:-(none found)}"
  export LD_LIBRARY_PATH=$PWD/.whl/shim:${lib13:+$(dirname "$lib13"):}${LD_LIBRARY_PATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# faiss' loader wants the nvidia-*-cu12 pip packages' metadata to preload their libraries; the shim
# directory on LD_LIBRARY_PATH provides the libraries instead
export _FAISS_WHEEL_DISABLE_CUDA_PRELOAD=1
stages=" ${GPU_STAGES:-check index sessions} "
python3 -c "import faiss, torch; print('faiss', faiss.__version__, 'gpus', faiss.get_num_gpus(), 'torch', torch.__version__)"
[[ $stages == *" check "* ]] &&
  timeout "${GPU_CHECK_S:-120}" python3 bench/gpu_check.py --epochs 3 2>&1 | grep -v -E 'Warning|warn\(' \
  | tee "$OUTD/gpu_check.log" | tail -3
[[ $stages == *" index "* ]] &&
  timeout "${GPU_INDEX_S:-170}" python3 bench/gpu_index.py --items "${GPU_INDEX_ITEMS:-500000}" 2>&1 \
  | grep -v -E 'Warning|warn\(' | tee "$OUTD/gpu_index.log" | tail -3
if [[ $stages == *" sessions "* && -d .gpu_data/pairs ]]; then
  variants=()  # one JSON object per line
  default_variant='{}'
  while IFS= read -r v; do [ -n "$v" ] && variants+=(--variant "$v"); done <<<"${GPU_SESSION_VARIANTS:-$default_variant}"
  timeout "${GPU_SESSIONS_S:-260}" python3 bench/gpu_sessions.py --pairs .gpu_data/pairs \
    --test .gpu_data/test.tsv --config configs/diginetica.toml "${variants[@]}" 2>&1 \
    | grep -v -E 'Warning|warn\(' | tee "$OUTD/gpu_sessions.log" | grep '^{'
fi
