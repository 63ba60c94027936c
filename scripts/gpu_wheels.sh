#!/usr/bin/env bash
# Wheels of what a lent GPU machine lacks for scripts/gpu_run.sh, into .whl/ (git-ignored; the run carries it).
# That machine's python3 (3.12) has torch, transformers, tokenizers, pillow, numpy, opencv-python-headless,
# matplotlib, pyyaml, psutil and requests, and reaches no package index; the versions here are this venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  "rapidfuzz==$(version rapidfuzz)" "ultralytics==$(version ultralytics)" "ultralytics-thop==$(version ultralytics-thop)"
ls -l .whl
