"""The Python client: retries on UNAVAILABLE, deadlines, rich errors; the CLI on top of it."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest

from handwriting import OcrClient, OcrError
from handwriting import cli as cli_module
from handwriting.v1 import ocr_service_pb2, ocr_service_pb2_grpc, page_pb2
from services.common import errors


class FlakyOcr(ocr_service_pb2_grpc.OcrServiceServicer):
    def __init__(self, failures: int, delay: float = 0.0):
        self.failures = failures
        self.delay = delay
        self.calls = 0
        self.lock = threading.Lock()

    def ProcessPage(self, request, context):
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if request.image.content == b"bad":
            context.abort_with_status(errors.bad_request("image.content", "not an image", "UNSUPPORTED_IMAGE"))
        if request.image.content == b"busy":
            context.abort_with_status(errors.overloaded("the service is busy", 1.5))
        time.sleep(self.delay)
        return ocr_service_pb2.ProcessPageResponse(
            page=page_pb2.Page(width=1, height=1, text="hi", lines=[page_pb2.Line(text="hi")])
        )


@pytest.fixture
def serve():
    servers = []

    def start(servicer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        ocr_service_pb2_grpc.add_OcrServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_retries_unavailable_then_succeeds(serve):
    flaky = FlakyOcr(failures=2)
    with OcrClient(serve(flaky), retries=3, backoff=0.05) as client:
        assert client.process_page(b"png").page.text == "hi"
    assert flaky.calls == 3


def test_gives_up_after_the_retries(serve):
    flaky = FlakyOcr(failures=10)
    with OcrClient(serve(flaky), retries=2, backoff=0.05) as client, pytest.raises(OcrError) as caught:
        client.process_page(b"png")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and flaky.calls == 3


def test_deadline_and_rich_errors(serve):
    address = serve(FlakyOcr(failures=0, delay=2.0))
    with OcrClient(address, timeout=0.3) as client:
        started = time.perf_counter()
        with pytest.raises(OcrError) as caught:
            client.process_page(b"png")
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.perf_counter() - started < 1.5
        with pytest.raises(OcrError) as caught:
            client.process_page(b"bad", timeout=5)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.violations == [("image.content", "not an image")] and caught.value.reason == "UNSUPPORTED_IMAGE"


def test_overload_tells_when_to_retry(serve):
    with OcrClient(serve(FlakyOcr(failures=0))) as client, pytest.raises(OcrError) as caught:
        client.process_page(b"busy")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "OVERLOADED" and caught.value.retry_after == 1.5


def test_cli_text_output_and_failure_exit_code(serve, tmp_path, capsys):
    address = serve(FlakyOcr(failures=0))
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(b"png")
    bad.write_bytes(b"bad")
    assert cli_module.main(["ocr", "--format", "text", "--address", address, str(good)]) == 0
    assert capsys.readouterr().out.strip() == "hi"
    assert cli_module.main(["ocr", "--address", address, str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "== " in captured.out and "image.content: not an image" in captured.err


def test_status_reports_unavailable_services(capsys):
    from tests.conftest import free_port

    dead = f"127.0.0.1:{free_port()}"
    code = cli_module.main(["status", "--address", dead, "--detector-address", dead, "--recognizer-address", dead])
    assert code == 1 and capsys.readouterr().out.count("UNAVAILABLE") == 3
