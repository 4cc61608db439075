#!/usr/bin/env bash
# The prepared script for a lent GPU machine: bf16 training (bench/gpu_check.py) and a GPU FAISS index
# (bench/gpu_index.py), then, when .gpu_data/ carries a session benchmark's training pairs, the model step of
# the session benchmark on the GPU (bench/gpu_sessions.py). Each stage is bounded in time and writes its
# log and JSON to $OUT. Run from the repository root there:
#   GPU_SESSION_VARIANTS='{"softmax": "full"}' bash bench/gpu_device_run.sh
#
# That machine has torch, pytorch-lightning, numpy, pandas and pyarrow (CUDA 13) but no msgspec and no
# FAISS, and nothing can be downloaded on it. So packages travel in .whl/ (git-ignored; carry it), made here:
#   pip download --no-deps --only-binary=:all: --python-version 3.1X --platform manylinux2014_x86_64 \
#       -d .whl msgspec==0.22.0          # for X in 0 1 2 3: pip picks the one that fits that python
# and FAISS: the official faiss-gpu 1.15.1 wheel (cp310-abi3, manylinux_2_28; ELF code for sm_70/75/80/86/
# 89/90 and PTX for compute_90, i.e. it runs on Hopper, unlike faiss-gpu-cu12 1.14.1 which had no sm_90) is
# 135 MB, over the 64 MiB a call carries, so it travels unpacked and re-packed with xz (58 MB):
#   pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 -d /tmp/fg faiss-gpu==1.15.1
#   mkdir /tmp/fg/u && python3 -m zipfile -e /tmp/fg/faiss_gpu-1.15.1-*.whl /tmp/fg/u
#   tar -C /tmp/fg/u -cf - faiss faiss_gpu.libs faiss_gpu-1.15.1.dist-info | xz -9e -T16 \
#       > .whl/faiss_gpu-1.15.1.tar.xz     # ~4 min; unpacked below with python's lzma (no xz binary there)
# libfaiss.so links libcudart.so.12 / libcublas.so.12 / libcublasLt.so.12 (not curand, though the wheel
# names it), and NVIDIA's cuBLAS 12 wheel (~600 MB) cannot travel. .whl/shim/ carries libcudart.so.12
# (from nvidia-cuda-runtime-cu12 12.9: the CUDA 13 driver runs 12.x runtimes) and a 16 kB libcublas.so.12
# built from bench/gpu_shim/ that forwards the eight cuBLAS calls FAISS makes (the same eight in 1.14.1 and
# 1.15.1: nm -D --undefined-only libfaiss.so) to the machine's libcublas.so.13 (same C ABI for these calls):
#   gcc -shared -fPIC -O2 -o .whl/shim/libcublas.so.12 -Wl,-soname,libcublas.so.12 \
#       -Wl,--version-script=bench/gpu_shim/cublas.map bench/gpu_shim/cublas_shim.c -ldl
#   echo | gcc -shared -fPIC -x c -o .whl/shim/libcublasLt.so.12 -Wl,-soname,libcublasLt.so.12 -
#   (an empty libcublasLt.so.12: FAISS needs the file, not a symbol from it)
# Setup, check and index share one time budget (GPU_BUDGET_S, default 400 s); sessions keeps its own limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTD=${OUT:-/tmp/gpu-out}
mkdir -p "$OUTD"
deadline=$((SECONDS + ${GPU_BUDGET_S:-400}))
left() {  # the smaller of $1 and the seconds left in the budget, at least 1 (timeout 0 would mean none)
  local r=$((deadline - SECONDS))
  ((r > $1)) && r=$1
  ((r < 1)) && r=1
  echo "$r"
}
timeout "$(left 90)" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site --find-links .whl msgspec || exit 3
for a in .whl/*.tar.xz; do  # faiss-gpu, unpacked: faiss/ and faiss_gpu.libs/ side by side (libfaiss' RPATH)
  [ -e "$a" ] || continue
  timeout "$(left 90)" python3 -c "import sys, tarfile; t = tarfile.open(sys.argv[1]); \
kw = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}; t.extractall('/tmp/site', **kw)" "$a" \
    || exit 3
done
# faiss-gpu 1.15.1's __init__ dlopens libcudart/libcublas/libcurand from the nvidia-*-cu12 pip packages when
# the faiss/_gpu_build marker is present (and ignores _FAISS_WHEEL_DISABLE_CUDA_PRELOAD); those packages are
# absent here, and the shim directory on LD_LIBRARY_PATH provides the libraries instead
rm -f /tmp/site/faiss/_gpu_build.py
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if ! ldconfig -p | grep -q 'libcublas.so.12 '; then
  # torch's pip wheels keep cuBLAS 13 in site-packages (nvidia/cu13/lib), not on ld.so's path
  sp=$(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null)
  lib13=$(find /usr/local /opt /usr/lib $sp -name 'libcublas.so.13*' 2>/dev/null | head -1)
  echo "no libcublas.so.12 here; shim over ${lib13:-(none found)}"
  export LD_LIBRARY_PATH=$PWD/.whl/shim${lib13:+:$(dirname "$lib13")}:${LD_LIBRARY_PATH:-}
fi
timeout "$(left 20)" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export _FAISS_WHEEL_DISABLE_CUDA_PRELOAD=1  # what faiss-gpu-cu12 1.14.1 needed instead of the rm above
stages=" ${GPU_STAGES:-check index sessions} "
timeout "$(left 60)" python3 -c "import faiss, torch; print('faiss', faiss.__version__, 'gpus', \
faiss.get_num_gpus(), 'torch', torch.__version__)" 2>&1 | tee "$OUTD/gpu_faiss_import.log"
[[ $stages == *" check "* ]] &&
  timeout "$(left "${GPU_CHECK_S:-120}")" python3 bench/gpu_check.py --epochs 3 2>&1 | grep -v -E 'Warning|warn\(' \
  | tee "$OUTD/gpu_check.log" | tail -3
[[ $stages == *" index "* ]] &&
  timeout "$(left "${GPU_INDEX_S:-170}")" python3 bench/gpu_index.py --items "${GPU_INDEX_ITEMS:-500000}" 2>&1 \
  | grep -v -E 'Warning|warn\(' | tee "$OUTD/gpu_index.log" | tail -3
if [[ $stages == *" sessions "* && -d .gpu_data/pairs ]]; then
  variants=()  # one JSON object per line
  default_variant='{}'
  while IFS= read -r v; do [ -n "$v" ] && variants+=(--variant "$v"); done <<<"${GPU_SESSION_VARIANTS:-$default_variant}"
  timeout "${GPU_SESSIONS_S:-260}" python3 bench/gpu_sessions.py --pairs .gpu_data/pairs \
    --test .gpu_data/test.tsv --config configs/diginetica.toml "${variants[@]}" 2>&1 \
    | grep -v -E 'Warning|warn\(' | tee "$OUTD/gpu_sessions.log" | grep '^{'
fi
