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
du -sh .gpudata
