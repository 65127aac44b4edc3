#!/usr/bin/env bash
# The GPU check in one command, on the device machine (benchmarks/device_kit.py; run tool:
# carry [".whl"], timeout_s 540). The wheels go to /tmp/site; logs and JSON to $OUT.
# DEVICE=cpu QUICK=1 rehearse it on a machine without a GPU.
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
cd "$(dirname "$0")/.." || exit 1

ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "on_device: no wheels in $WHEELS: run 'python -m benchmarks.device_kit wheels' here first, then carry .whl" >&2; exit 2; }
mkdir -p "$OUT"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 3
# the project from its source tree (no build step: the image's setuptools may lack bdist_wheel)
export PYTHONPATH="$PWD/src:/tmp/site" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PYTHON" -c 'import sys, numpy, pandas, torch, mlflow, pydantic, pipeline.stages; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__, "pandas", pandas.__version__, "mlflow", mlflow.__version__, "pydantic", pydantic.VERSION)'
} 2>&1 | tee "$OUT/machine.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 4

status=0
timeout 200 "$PYTHON" -m benchmarks.graphs --device "$DEVICE" ${QUICK:+--rounds 1 --epochs 200} --json "$OUT/graphs.json" 2>&1 | tee "$OUT/graphs.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=5
timeout 280 "$PYTHON" -m benchmarks --device "$DEVICE" ${QUICK:+--quick} --only s0_small,s0_wide,s4 --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=$((status + 10))
exit $status
