#!/usr/bin/env bash
# The peer OCR engines for side-by-side evaluation: rapidocr (PyPI, models inside the wheel),
# tesseract (Debian) and easyhtr (PyPI, in its own .venv-easyhtr: it pins old numpy and onnxruntime).
# Only the evaluation command uses them; the service never does.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install -q '.[peers]' 2>&1 | grep -v "is ignored" || true
if ! command -v tesseract >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null; }
fi
[ -x .venv-easyhtr/bin/python ] || python3 -m venv .venv-easyhtr
.venv-easyhtr/bin/pip install -q easyhtr==0.1.1 2>&1 | grep -v "is ignored" || true
tesseract --version | head -1
