#!/usr/bin/env bash
# Reproduces the shipped models on a 2-core CPU machine, the way they were made: ROUND=<name> runs that
# section of training/recipe.txt (default: round 1), then the evaluation of the model cards.
#   ROUND=7 training/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PY=.venv/bin/python PYTHONPATH=$PWD OMP_NUM_THREADS=1
ROUND=${ROUND:-1}
steps=$(awk -v round="[round $ROUND]" '
  index($0, round) == 1 { found = 1; next }
  /^\[round / { found = 0 }
  found && !/^#/ && NF { print }' training/recipe.txt)
if [ -z "$steps" ]; then
  echo "no [round $ROUND] in training/recipe.txt; rounds: $(grep -o '^\[round [^]]*\]' training/recipe.txt | tr '\n' ' ')" >&2
  exit 2
fi
mkdir -p runs
# copies a recognizer checkpoint's files into models/recognizer (the lexicon stays)
ship_recognizer() {
  for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json \
    training_state.json; do
    cp "$1/$f" models/recognizer/
  done
}
export -f ship_recognizer
bash -euo pipefail -c "$steps"
exec $PY -m training.evaluate_models
