"""One request through Envoy gives one trace across Envoy and the three services, W3C or X-Ray."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest

from handwriting.stack import LocalStack, StackConfig
from tests.collectors import OtlpCollector, XRayDaemon
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
SERVICES = {"orchestrator", "detector", "recognizer"}
SERVER, CLIENT = 2, 3


def start_stack(tmp_path, tracing: str, collector: OtlpCollector, daemon: XRayDaemon | None) -> LocalStack:
    stack = LocalStack(
        StackConfig.on_free_ports(
            log_dir=tmp_path,
            tracing=tracing,
            collector=f"127.0.0.1:{collector.port}",
            xray_daemon=f"127.0.0.1:{daemon.port}" if daemon else "127.0.0.1:2000",
            extra_env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
        )
    )
    stack.start()
    return stack


def post_sample(stack: LocalStack) -> dict:
    body = {"image": {"content": base64.b64encode((REPO_ROOT / "samples" / "page.png").read_bytes()).decode()}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.config.envoy_port}/v1/pages:process",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def server_span(spans, service):
    return next(s for s in spans if s.service == service and s.kind == SERVER and s.name.startswith("/handwriting.v1."))


def test_w3c_trace_spans_envoy_and_every_stage(tmp_path):
    collector = OtlpCollector()
    stack = start_stack(tmp_path, "w3c", collector, None)
    try:
        assert post_sample(stack)["page"]["lines"]
        spans = collector.wait_for(SERVICES | {"envoy"}, server_spans=True)
    finally:
        stack.stop()
        collector.stop()
    by_id = {s.span_id: s for s in spans}
    envoy_root = next(s for s in spans if s.service == "envoy" and not s.parent_id)
    trace = [s for s in spans if s.trace_id == envoy_root.trace_id]
    assert SERVICES | {"envoy"} <= {s.service for s in trace}

    orchestrator = server_span(trace, "orchestrator")
    assert by_id[orchestrator.parent_id].service == "envoy"
    for stage in ("detector", "recognizer"):
        stage_span = server_span(trace, stage)
        client_span = by_id[stage_span.parent_id]
        assert client_span.service == "orchestrator" and client_span.kind == CLIENT
    names = {(s.service, s.name) for s in trace}
    assert {("orchestrator", "decode"), ("orchestrator", "assemble"), ("detector", "detect")} <= names
    batches = [s for s in trace if s.name == "recognize_call"]
    assert batches and all(s.attributes["batch_size"] > 0 for s in batches)
    recognized = [s for s in trace if s.service == "recognizer" and s.name == "recognize_batch"]
    assert sorted(s.attributes["batch_size"] for s in batches) == sorted(s.attributes["batch_size"] for s in recognized)
    assert not [s for s in spans if "grpc.health" in s.name], "health checks must not be traced"


def test_xray_ids_and_propagation(tmp_path):
    collector, daemon = OtlpCollector(), XRayDaemon()
    stack = start_stack(tmp_path, "xray", collector, daemon)
    try:
        post_sample(stack)
        segments = daemon.wait()
        spans = collector.wait_for(SERVICES, server_spans=True)
    finally:
        stack.stop()
        collector.stop()
        daemon.stop()
    assert segments, "Envoy sent no X-Ray segment"
    xray_trace_id = segments[0]["trace_id"]  # 1-<8 hex epoch seconds>-<24 hex>
    version, epoch, unique = xray_trace_id.split("-")
    assert version == "1" and abs(int(epoch, 16) - time.time()) < 3600
    otel_trace_id = epoch + unique
    orchestrator = server_span(spans, "orchestrator")
    assert orchestrator.trace_id == otel_trace_id
    assert {s.service for s in spans if s.trace_id == otel_trace_id} >= SERVICES
