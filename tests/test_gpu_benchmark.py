"""The prepared run for a lent GPU machine (scripts/gpu_run.sh), checked here on the CPU: benchmarks/gpu.py needs
only what such a machine has (torch, transformers, pillow, numpy) and the wheels scripts/gpu_wheels.sh fetches
(rapidfuzz, ultralytics), in a process where the service's other packages cannot be imported; benchmarks/load.py
runs as the script calls it, and counts refusals as the GPU run needed them told apart; and benchmarks/latency.py's
in-process row."""

from __future__ import annotations

import json
import os
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


def test_the_load_benchmark_runs_as_the_gpu_run_calls_it(tmp_path):
    """scripts/gpu_run.sh's second part: the local stack without Envoy or peers, settings passed with --env
    (here on the CPU's default backend), each level's CPU a page and cores busy."""
    settings = ["HW_MAX_PAGES_IN_FLIGHT=32", "HW_BATCH_MAX_QUEUE=128", "HW_BATCH_CONCURRENCY=2"]
    arguments = ["--no-envoy", "--no-peers", "--levels", "1", "4", "--seconds", "2", "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "benchmarks/load.py", *arguments, *(f"--env={item}" for item in settings)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads((tmp_path / "load.json").read_text())
    assert [(row["route"], row["clients"]) for row in figures["rows"]] == [("gRPC", 1), ("gRPC", 4)]
    assert figures["peers"] == {}
    for row in figures["rows"]:
        assert set(row["codes"]) == {"OK"}  # 4 clients fit in 32 pages in flight and a queue of 128
        # the three services (no Envoy), and the load clients' own share beside them
        assert set(row["cpu_s_per_page"]) == {"detector", "recognizer", "orchestrator", "load clients"}
        assert row["cpu_s_per_page"]["recognizer"] > 0 and 0 < row["cores_busy"] <= os.cpu_count() + 0.5
    assert "HW_BATCH_MAX_QUEUE=128" in (tmp_path / "load.md").read_text()


def test_the_load_benchmark_counts_refusals_without_a_retry_delay_apart():
    """The admission's refusal says when to retry; one that does not came from further in (a model service, gRPC's
    own cap on calls) after the page was admitted, and the table must show it (as on the H200, 2026-12-04)."""
    from concurrent import futures

    import grpc

    from benchmarks.load import closed_loop
    from handwriting.v1 import ocr_service_pb2_grpc
    from services.common import errors

    class Refusing(ocr_service_pb2_grpc.OcrServiceServicer):
        calls = 0

        def ProcessPage(self, request, context):
            Refusing.calls += 1
            if Refusing.calls % 2:
                context.abort_with_status(errors.overloaded("too many pages", 0.01))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ocr_service_pb2_grpc.add_OcrServiceServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        row = closed_loop(f"127.0.0.1:{port}", b"not read", clients=1, seconds=0.5)
    finally:
        server.stop(0)
    assert set(row["codes"]) == {"RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED without RetryInfo"}
    assert row["codes"]["RESOURCE_EXHAUSTED without RetryInfo"] >= 2 and row["pages_per_min"] == 0


def test_the_latency_benchmarks_in_process_row_reads_the_sample_page(sample_page):
    """benchmarks/latency.py times the models by wrapping their `predict`: the wrapper passes on whatever the pipeline
    gives them (the recognizer's `lines` flag once broke it)."""
    from benchmarks.latency import in_process

    totals, stages = in_process(sample_page.read_bytes(), repeats=1)
    assert len(totals) == 1 and stages["words"] >= 80 and stages["recognizer"] > 0
