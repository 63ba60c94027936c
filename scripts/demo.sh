#!/usr/bin/env bash
# Starts the whole stack on the shipped default models, OCRs samples/page.png through it (gRPC),
# prints lines and words with boxes, then stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LOGS=runs/demo-logs
mkdir -p "$LOGS"
"$BIN/handwriting" serve --log-dir "$LOGS" &
STACK=$!
trap 'kill -TERM $STACK 2>/dev/null; wait $STACK 2>/dev/null || true' EXIT
"$BIN/handwriting" ocr --wait 300 samples/page.png
echo
echo "Ground truth (samples/page.txt):"
cat samples/page.txt
