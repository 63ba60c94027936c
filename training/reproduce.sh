#!/usr/bin/env bash
# Reproduces the shipped models from scratch on a 2-core CPU machine in about 2 hours:
# synthetic data (~3 min), then the detector (~66 min, 1 thread) and the recognizer (~80 min,
# 1 thread) side by side, then the evaluation. Set RESUME=1 to continue from models/ instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
mkdir -p runs
[ -f data/synth/detector/data.yaml ] || $PY -m training.make_data --out data/synth --train-pages 1200 --val-pages 60
[ -f data/synth-strips/detector/data.yaml ] || $PY -m training.make_data --out data/synth-strips \
  --train-pages 0 --val-pages 0 --train-strips 1500 --val-strips 100
$PY -m training.combine_datasets data/synth data/synth-strips --out data/detector-all.yaml
DETECTOR_INIT=()
RECOGNIZER_INIT=()
if [ "${RESUME:-0}" = 1 ]; then
  DETECTOR_INIT=(--init-from models/detector/detector.pt)
  RECOGNIZER_INIT=(--init-from models/recognizer)
fi
$PY -m training.train_detector --data data/detector-all.yaml --out runs/detector --hours 1.1 --threads 1 \
  "${DETECTOR_INIT[@]}" > runs/detector.log 2>&1 &
DETECTOR=$!
$PY -m training.train_recognizer --data data/synth/recognizer --out runs/recognizer --minutes 80 --threads 1 \
  "${RECOGNIZER_INIT[@]}" > runs/recognizer.log 2>&1
wait $DETECTOR
cp runs/detector/detector.pt runs/detector/detector.onnx runs/detector/metrics.json models/detector/
cp runs/recognizer/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json,training_state.json} models/recognizer/
$PY -m training.evaluate_models
