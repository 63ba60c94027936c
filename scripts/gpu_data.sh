#!/usr/bin/env bash
# The evaluation data scripts/gpu_run.sh scores the models on, into .gpudata/ (git-ignored; the run carries it):
# the first N held-out-font word crops (default 1,000), the detector's held-out-font validation pages, and the
# real handwriting samples of real-dev. From data/synth (`python -m training.make_data`) and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
SYNTH=${SYNTH:-data/synth}
REAL_DEV=${REAL_DEV:-../shared/data/real-dev}
rm -rf .gpudata
mkdir -p .gpudata/synth/recognizer/val .gpudata/synth/detector
head -n "$N" "$SYNTH/recognizer/val/labels.tsv" >.gpudata/synth/recognizer/val/labels.tsv
cut -f1 .gpudata/synth/recognizer/val/labels.tsv | sed "s|^|$SYNTH/recognizer/val/|" |
  xargs cp -t .gpudata/synth/recognizer/val/
mkdir -p .gpudata/synth/detector/images .gpudata/synth/detector/labels
cp -r "$SYNTH/detector/images/val" .gpudata/synth/detector/images/
cp -r "$SYNTH/detector/labels/val" .gpudata/synth/detector/labels/
rm -f .gpudata/synth/detector/labels/*.cache
cp -r "$REAL_DEV" .gpudata/real-dev
# for scripts/gpu_train.sh: the training hands' font files (make_data renders its training pages on that machine) and
# 300 crops of the seed-18 development pages (held-out hands, words and lines) that pick its checkpoint
DEV=${DEV:-data/synth-s17}
if [ -d "$DEV/recognizer/val" ]; then
  mkdir -p .gpudata/dev-crops
  # (the lines under recognizer-lines/val/, the folder train_recognizer.is_line reads whole lines from)
  { head -n 150 "$DEV/recognizer/val/labels.tsv" | sed 's|^|words/|'; head -n 150 "$DEV/recognizer-lines/val/labels.tsv" | sed 's|^|recognizer-lines/val/|'; } >.gpudata/dev-crops/labels.tsv
  mkdir -p .gpudata/dev-crops/words .gpudata/dev-crops/recognizer-lines/val
  head -n 150 "$DEV/recognizer/val/labels.tsv" | cut -f1 | sed "s|^|$DEV/recognizer/val/|" | xargs cp -t .gpudata/dev-crops/words/
  head -n 150 "$DEV/recognizer-lines/val/labels.tsv" | cut -f1 | sed "s|^|$DEV/recognizer-lines/val/|" | xargs cp -t .gpudata/dev-crops/recognizer-lines/val/
fi
PYTHONPATH=. "${PYTHON:-.venv/bin/python}" - <<'PY'
import shutil
from pathlib import Path
from training.synth.fonts import ensure_fonts, font_file, training_families
from training.synth.text import training_vocabulary
for family in training_families():
    source = ensure_fonts([family])[0]
    target = font_file(family, Path(".gpudata/fonts"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
Path(".gpudata/vocabulary.txt").write_text("\n".join(training_vocabulary()) + "\n")
PY
du -sh .gpudata
