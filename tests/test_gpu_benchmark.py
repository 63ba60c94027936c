"""benchmarks/gpu.py, the prepared run for a lent GPU machine, needs only what such a machine has (torch,
transformers, pillow, numpy) and the wheels scripts/gpu_wheels.sh fetches (rapidfuzz, ultralytics): checked here on
the CPU in a process where the service's other packages cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

WITHOUT_THE_SERVICES_PACKAGES = """
import runpy, sys
for name in ("grpc", "onnxruntime", "openvino", "onnx", "google.protobuf", "opentelemetry", "ultralytics"):
    sys.modules[name] = None  # as on the GPU machine (ultralytics too, when its wheel is not carried)
sys.argv = ["gpu.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu.py", run_name="__main__")
"""


def test_the_gpu_benchmark_runs_with_torch_alone(tmp_path):
    out = tmp_path / "gpu.json"
    arguments = ["--device", "cpu", "--repeats", "1", "--pages", "2", "--batch-sizes", "32", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SERVICES_PACKAGES, *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [row["dtype"] for row in figures["recognizer"]] == ["float32", "bfloat16"]  # float16: GPUs only
    assert figures["recognizer"][0]["same_as_cpu"] == 85  # the CPU's float32 is the reference itself
    assert [(row["dtype"], row["pages"]) for row in figures["pages"]] == [("float32", 2), ("bfloat16", 2)]
    assert all(row["pages_per_min"] > 0 for row in figures["pages"])
    assert "detector" not in figures and "ultralytics is not installed" in run.stdout
