"""Trace receivers written for the tests: an OTLP/gRPC collector and an X-Ray daemon (UDP)."""

from __future__ import annotations

import json
import socket
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # 32 hex digits
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict
    kind: int  # OTLP SpanKind: 2 server, 3 client


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Condition()  # notified on every export
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: _value(a.value) for a in span.attributes}
                        self.spans.append(
                            ReceivedSpan(
                                service,
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                attributes,
                                span.kind,
                            )
                        )
            self.lock.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, services: set[str], timeout: float = 20.0, server_spans: bool = False) -> list[ReceivedSpan]:
        """Wait until every service in `services` sent a span.

        With `server_spans`, wait for the server span of a handwriting RPC, which ends last.
        """

        def arrived() -> bool:
            seen = {
                s.service
                for s in self.spans
                if not server_spans or s.service == "envoy" or (s.kind == 2 and s.name.startswith("/handwriting.v1."))
            }
            return services <= seen

        with self.lock:
            if not self.lock.wait_for(arrived, timeout):
                raise TimeoutError(f"spans from {services} not all received: {sorted({s.service for s in self.spans})}")
            # the services export in batches: take what else arrives until the exports stop for half a second
            while self.lock.wait(timeout=0.5):
                pass
            return list(self.spans)

    def stop(self) -> None:
        self.server.stop(0)


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class XRayDaemon:
    """Receives X-Ray segment documents over UDP, as the daemon (or the ADOT collector) does."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.segments: list[dict] = []
        self.received = threading.Event()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, _ = self.socket.recvfrom(65535)
            except OSError:
                continue
            header, _, body = data.decode().partition("\n")
            if json.loads(header).get("format") == "json":
                self.segments.append(json.loads(body))
                self.received.set()

    def wait(self, timeout: float = 20.0) -> list[dict]:
        self.received.wait(timeout)
        return list(self.segments)

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        self.socket.close()
