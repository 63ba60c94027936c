#!/usr/bin/env bash
# Starts the whole stack on the shipped default models (detector, recognizer, orchestrator, Envoy),
# OCRs samples/page.png through gRPC (lines and words with boxes), then once more over REST through
# Envoy with curl (with an API key made for the run), and stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LOGS=runs/demo-logs
mkdir -p "$LOGS"
KEY="demo-$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')"
(umask 077; echo "demo $KEY" > "$LOGS/api-keys")
"$BIN/handwriting" serve --log-dir "$LOGS" --api-keys "$LOGS/api-keys" &
STACK=$!
trap 'kill -TERM $STACK 2>/dev/null; wait $STACK 2>/dev/null || true' EXIT
"$BIN/handwriting" ocr --wait 300 samples/page.png
echo
echo "Ground truth (samples/page.txt):"
cat samples/page.txt
echo
echo "REST through Envoy: POST http://localhost:8080/v1/pages:process"
for _ in $(seq 50); do curl -sf -o /dev/null localhost:8080/healthz && break; sleep 0.2; done
{ printf '{"image":{"content":"'; base64 -w0 samples/page.png; printf '"}}'; } \
  | curl -s -X POST localhost:8080/v1/pages:process -H "x-api-key: $KEY" -H 'content-type: application/json' \
      --data-binary @- \
  | "$BIN/python" -c 'import json, sys; p = json.load(sys.stdin)["page"]; print(len(p["lines"]), "lines; first:", p["lines"][0]["text"])'
