#!/usr/bin/env bash
# Wheels of what a lent GPU machine lacks for scripts/gpu_run.sh, into .whl/ (git-ignored; the run carries it).
# That machine's python3 (3.12) has torch, transformers, tokenizers, pillow, numpy, opencv-python-headless,
# matplotlib, pyyaml, psutil, requests and wrapt, and reaches no package index. The rest is what the three
# services import (gRPC's health, reflection and status, OpenTelemetry, rapidfuzz, ultralytics) and the
# versions the stubs in handwriting/v1 were generated for (grpcio, protobuf), at this venv's versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
pin() { for name in "$@"; do echo "$name==$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")"; done; }
rm -rf .whl
# shellcheck disable=SC2046
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  $(pin rapidfuzz ultralytics ultralytics-thop grpcio grpcio-health-checking grpcio-reflection grpcio-status \
    googleapis-common-protos protobuf opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions \
    opentelemetry-proto opentelemetry-exporter-otlp-common opentelemetry-exporter-otlp-proto-common \
    opentelemetry-exporter-otlp-proto-grpc \
    opentelemetry-instrumentation opentelemetry-instrumentation-grpc opentelemetry-propagator-aws-xray \
    opentelemetry-sdk-extension-aws)
du -sh .whl
