#!/usr/bin/env bash
# Generates the Python code (messages, stubs, type hints) and the descriptor set that Envoy's
# gRPC-JSON transcoder reads, from protos/. The one command for generated code; never edit its output.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
rm -rf handwriting/v1 && mkdir -p handwriting/v1 deploy/envoy
"$PYTHON" -m grpc_tools.protoc -Iprotos \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  protos/handwriting/v1/*.proto
touch handwriting/v1/__init__.py
"$PYTHON" -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
  --descriptor_set_out=deploy/envoy/handwriting.pb protos/handwriting/v1/*.proto protos/google/rpc/error_details.proto
