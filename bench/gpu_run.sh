#!/usr/bin/env bash
# Run bench/gpu.py on a GPU machine that has Python 3.12 and its own torch but no fastai.
# Build the wheels first, here: `make gpu-wheels` (bench/wheels/, carried with the tree).
# Usage: bash bench/gpu_run.sh [bench/gpu.py options]   (WHEELS=dir, PYTHON=python3.12)
# The wheels go, with --no-deps, into a virtual environment over the machine's packages
# (--system-site-packages): the machine's torch, CUDA libraries and site-packages stay as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-bench/wheels}
PY=${PYTHON:-python3}
VENV=${GPU_VENV:-/tmp/curate-gpu-venv}
ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run 'make gpu-wheels' first" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
V="$VENV/bin/python"
"$V" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'devices', torch.cuda.device_count())"
"$V" -m pip install -q --no-deps --no-index "$WHEELS"/*.whl
# Fail early, naming what is still missing, rather than deep inside the bench.
"$V" - <<'PY'
import importlib, sys
missing = []
for mod in ("numpy", "pandas", "PIL", "sklearn", "scipy", "matplotlib", "torchvision", "sqlalchemy", "pydantic",
            "pydantic_settings", "fastcore", "fastai.vision.all"):
    try:
        importlib.import_module(mod)
    except Exception as exc:  # ImportError, or a compiled module that does not match
        missing.append(f"{mod} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("missing on this machine; add their wheels to GPU_WHEELS_BINARY for make gpu-wheels:\n  " + "\n  ".join(missing))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$V" bench/gpu.py "$@"
