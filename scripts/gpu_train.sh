#!/usr/bin/env bash
# The prepared training run for a lent GPU machine (issue 14: a cheaper encoder input). The shipped recognizer is
# made to read crops 32 px tall (training.encoder_input: 0.44 of the encoder's work at 48 px), then learns at that
# height on word and line crops rendered there, its encoder distilled from the shipped model's
# (training/configs/recognizer_ppocr_h32_gpu.json); then it is scored on the held-out crops and real-dev (about 7
# minutes in all: 600 pages rendered there, 3.5 minutes of training).
#   scripts/gpu_wheels.sh, scripts/gpu_data.sh  here first (gpu_data also copies the training hands' fonts and the
#                                               development crops that pick the checkpoint)
#   device run "bash scripts/gpu_train.sh" with carry [".whl", ".gpudata"], timeout_s 600; the model comes back in
#   parts under 16 MB: copy models/recognizer to DIR, put FILES_AT's config.json and training_state.json in it and
#   cat FILES_AT/model.safetensors.part-* > DIR/model.safetensors, then measure DIR here with
#   training.evaluate_models and training.evaluate (models/recognizer/README.md) before anything ships
# DEVICE=cpu PAGES=4 MINUTES=0.3 PYTHON=<a Python 3.12 venv> scripts/gpu_train.sh runs the same here, on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-train}
mkdir -p "$out"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PAGES=${PAGES:-600}
MINUTES=${MINUTES:-3.5}
HEIGHT=${HEIGHT:-32}
work=${WORK:-/tmp/gpu-train}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
log=$out/train.log
mkdir -p .cache "$work"
[ -e .cache/fonts ] || ln -s ../.gpudata/fonts .cache/fonts
export HW_TRAINING_VOCABULARY=$PWD/.gpudata/vocabulary.txt  # (that machine has no wordfreq)
# the training pages, rendered on all cores (seed 29: pages no shipped model trained on)
[ -f "$work/synth/recognizer/train/labels.tsv" ] || timeout 240 "$PY" -m training.make_data --out "$work/synth" --train-pages "$PAGES" --val-pages 0 --seed 29 \
  --workers "$(nproc)" 2>&1 | tail -n 3 | tee "$log"
"$PY" -m training.encoder_input --height "$HEIGHT" --out "$work/init" | tee -a "$log"
timeout $((${MINUTES%.*} * 60 + 150)) "$PY" -m training.train_recognizer --data "$work/synth/recognizer" \
  "$work/synth/recognizer-lines" --val .gpudata/dev-crops --config training/configs/recognizer_ppocr_h32_gpu.json \
  --init-from "$work/init" --out "$work/trained" --minutes "$MINUTES" --device "$DEVICE" --seed 41 2>&1 |
  grep -v "Loading weights\|Writing model" | tee -a "$log"
cp models/recognizer/lexicon.tsv "$work/trained/"
# the trained model's figures on the held-out crops and real-dev (the shipped model's on that GPU are in
# benchmarks/results/gpu-h200/: EVAL_MODELS="shipped trained" measures both again, a minute more)
printf 'path: %s\ntrain: images/val\nval: images/val\nnames:\n  0: word\n  1: line\n' "$PWD/.gpudata/synth/detector" \
  >.gpudata/synth/detector/data.yaml
for name in ${EVAL_MODELS:-trained}; do
  model=models/recognizer
  [ "$name" = trained ] && model=$work/trained
  timeout 120 "$PY" -m training.evaluate_models --data .gpudata/synth --real-dev .gpudata/real-dev --crops recognizer \
    --recognizer "$model" --device "$DEVICE" --backend torch ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} \
    --out "$out/eval-$name.json" 2>&1 | tail -n 5 | tee -a "$log"
done
cp "$work/trained/config.json" "$work/trained/training_state.json" "$out/"
split -b 15M -d "$work/trained/model.safetensors" "$out/model.safetensors.part-"
ls -la "$out"
