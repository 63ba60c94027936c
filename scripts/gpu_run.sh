#!/usr/bin/env bash
# The prepared run for a lent GPU machine (benchmarks/README.md, "Measured on a GPU"): the models' figures on the
# GPU, then the three services on it under load (gRPC; that machine has no Envoy), in one command.
#   scripts/gpu_wheels.sh        here, once: the wheels that machine's python3 lacks, into .whl/
#   scripts/gpu_data.sh          here, once: held-out crops and pages and real-dev, into .gpudata/ (optional)
#   then, with the device tool: run "scripts/gpu_run.sh" with carry [".whl", ".gpudata"] (its figures come back
#   from $OUT: at most 8 files, so the logs are shared)
# DEVICE=cpu LOAD_DTYPES=float32 PYTHON=.venv/bin/python scripts/gpu_run.sh runs the same here, on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi >"$out/gpu.log"
timeout 150 "$PY" benchmarks/gpu.py --device "$DEVICE" --out "$out/gpu.json" 2>&1 | tee -a "$out/gpu.log"
# the model cards' figures on the GPU (held-out-font word crops, greedy and as the service decodes; the detector's
# mAP; real-dev through the pipeline), in float32 and float16
if [ -d .gpudata ]; then
  printf 'path: %s\ntrain: images/val\nval: images/val\nnames:\n  0: word\n  1: line\n' "$PWD/.gpudata/synth/detector" \
    >.gpudata/synth/detector/data.yaml
  for dtype in ${EVAL_DTYPES:-float32 float16}; do
    timeout 110 "$PY" -m training.evaluate_models --data .gpudata/synth --real-dev .gpudata/real-dev \
      --device "$DEVICE" --backend torch --dtype "$dtype" ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} \
      --out "$out/eval-$dtype.json" 2>&1 | tail -n 60 | tee -a "$out/gpu.log"
  done
fi
# the stack under load: both model services on the GPU in torch, the recognizer's batches at a GPU's defaults
# (decoder batches of 128, calls of up to 512 crops), and room for more pages in flight than two CPU cores have
# (HW_MAX_PAGES_IN_FLIGHT; gRPC's cap on calls follows the queues: HW_MAX_CONCURRENT_RPCS)
for dtype in ${LOAD_DTYPES:-float32 float16}; do
  timeout 120 "$PY" benchmarks/load.py --no-envoy --no-peers --seconds 12 --out "runs/gpu-load-$dtype" \
    --env HW_DEVICE="$DEVICE" --env HW_BACKEND=torch --env HW_DTYPE="$dtype" --env HW_MAX_PAGES_IN_FLIGHT=32 \
    --env HW_BATCH_MAX_QUEUE=128 2>&1 | tee -a "$out/load.log"
  cp "runs/gpu-load-$dtype/load.json" "$out/load-$dtype.json"
  tail -n 30 "runs/gpu-load-$dtype"/logs/*.log >>"$out/services.log" 2>&1
done
