#!/usr/bin/env bash
# The test command: lint, proto checks (buf lint, buf breaking, generated code up to date), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONPATH=$PWD

echo "== ruff"
"$BIN/ruff" check services handwriting training tests deploy benchmarks
"$BIN/ruff" format --check -q services handwriting training tests deploy benchmarks

echo "== architecture rules (import-linter contracts in pyproject.toml)"
"$BIN/lint-imports" --no-cache

echo "== buf lint / breaking"
"$BIN/buf" lint
if git rev-parse --verify -q main >/dev/null; then
  "$BIN/buf" breaking --against '.git#branch=main'
fi

echo "== generated code is up to date with protos/"
scripts/gen_protos.sh
if ! git diff --quiet -- handwriting/v1 deploy/envoy/handwriting.pb; then
  git diff --stat -- handwriting/v1 deploy/envoy/handwriting.pb
  echo "generated code is stale: run scripts/gen_protos.sh and commit" >&2
  exit 1
fi

echo "== deploy/envoy/envoy.yaml and handwriting/web/openapi.yaml are up to date"
"$BIN/python" -m deploy.envoy.config --check
"$BIN/python" -m deploy.envoy.openapi --check

echo "== browser for the web page test"
scripts/setup_browser.sh

echo "== pytest"
"$BIN/python" -m pytest -q -p no:cacheprovider "$@"
