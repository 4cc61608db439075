#!/usr/bin/env bash
# One short GPU check for a lent GPU machine (see bench/gpu_check.py). Run from the repository root:
#   bash bench/gpu_check.sh            # GPU: bf16 training, samples/s, quality vs CPU
#   bash bench/gpu_check.sh --dry-run  # anywhere: CPU stands in for the GPU
# The machine has torch, pytorch-lightning and torchmetrics only. If numpy/pandas/pyarrow/msgspec are
# missing, wheels carried in .gpu_wheels/ (pip download them here for the machine's Python first) are
# installed offline; otherwise the script says what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
missing=$($PY - <<'PYEOF'
import importlib.util
mods = ["torch", "pytorch_lightning", "torchmetrics", "numpy", "pandas", "pyarrow", "msgspec"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  if [ -d .gpu_wheels ]; then
    $PY -m pip install --no-index --find-links .gpu_wheels $missing
  else
    echo "{\"ok\": false, \"error\": \"missing python modules: $missing (carry wheels in .gpu_wheels/)\"}"
    exit 2
  fi
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
PYTHONPATH=. exec $PY bench/gpu_check.py "$@"
