#!/usr/bin/env bash
# The prepared run for a lent GPU machine (README, "On a GPU"): the models' figures on the GPU in one command.
#   scripts/gpu_wheels.sh        here, once: the wheels that machine's python3 lacks, into .whl/
#   then, with the device tool: run "scripts/gpu_run.sh" with carry [".whl"] (its figures come back from $OUT)
# DEVICE=cpu PYTHON=.venv/bin/python scripts/gpu_run.sh runs the same here, on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi | tee "$out/nvidia-smi.txt"
"$PY" benchmarks/gpu.py --device "${DEVICE:-cuda}" --out "$out/gpu.json" 2>&1 | tee "$out/gpu.log"
