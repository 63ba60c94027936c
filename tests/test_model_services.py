"""Detector and recognizer services: real aio servers on port 0 with tiny real models."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from handwriting.v1 import detector_service_pb2 as detector_pb
from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import image_pb2
from handwriting.v1 import recognizer_service_pb2 as recognizer_pb
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc
from services.common.errors import details_of
from services.common.images import image_to_raw
from services.common.settings import DetectorSettings, RecognizerSettings
from services.detector import server as detector_server
from services.recognizer import server as recognizer_server
from tests.conftest import png_bytes, word_page


@pytest.fixture(scope="module")
async def detector(tiny_detector_weights):
    settings = DetectorSettings(
        host="127.0.0.1",
        port=0,
        detector_weights=str(tiny_detector_weights),
        detector_image_size=128,
        reflection=True,
    )
    running = await detector_server.start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield channel
    await channel.close()
    await running.stop(0)


@pytest.fixture(scope="module")
async def recognizer(tiny_recognizer_dir):
    settings = RecognizerSettings(
        host="127.0.0.1",
        port=0,
        recognizer_model_dir=str(tiny_recognizer_dir),
        max_new_tokens=6,
        max_crops_per_request=8,
    )
    running = await recognizer_server.start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield channel
    await channel.close()
    await running.stop(0)


async def list_services(channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        return {service.name for service in response.list_services_response.service}


async def test_detector_serves_health_reflection_and_detections(detector):
    health = health_pb2_grpc.HealthStub(detector)
    response = await health.Check(health_pb2.HealthCheckRequest(service="handwriting.v1.DetectorService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert "handwriting.v1.DetectorService" in await list_services(detector)

    page = word_page([((20, 20, 120, 50), 0)], size=(300, 200))
    stub = detector_grpc.DetectorServiceStub(detector)
    for image in (image_pb2.Image(content=png_bytes(page)), image_to_raw(page)):
        result = await stub.Detect(detector_pb.DetectRequest(image=image, min_score=0.001))
        assert (result.image_width, result.image_height) == (300, 200)
        for detection in result.detections:  # random weights: whatever it finds must be well-formed
            assert detection.detection_class in (detector_pb.DETECTION_CLASS_WORD, detector_pb.DETECTION_CLASS_LINE)
            assert 0 <= detection.score <= 1 and detection.box.right >= detection.box.left


async def together_and_alone(servicer, add_to_server, service_name: str, call, requests: list) -> tuple:
    """Serve `servicer` (its settings' batch wait long enough for every request to join the first model call), send
    `requests` at once and then one by one through `call(channel)`: (the answers together, alone, the calls' sizes)."""
    import asyncio

    from services.common.server import start_model_service

    running = await start_model_service(servicer.settings, servicer, add_to_server, service_name)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            method = call(channel)
            together = await asyncio.gather(*(method(request) for request in requests))
            alone = [await method(request) for request in requests]
    finally:
        await running.stop(0)
    return together, alone, servicer.runner.batch_sizes


async def test_detector_finds_concurrent_requests_pages_in_one_call_as_it_would_alone(sample_page):
    from PIL import ImageOps

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS

    settings = DetectorSettings(
        host="127.0.0.1", port=0, detector_weights=str(DEFAULT_DETECTOR_WEIGHTS), batch_wait_ms=500
    )
    page = Image.open(sample_page).convert("RGB")
    pages = [page, ImageOps.mirror(page), page.rotate(1, fillcolor="white"), page.resize((900, 700))]
    together, alone, sizes = await together_and_alone(
        detector_server.DetectorServicer(settings),
        detector_grpc.add_DetectorServiceServicer_to_server,
        detector_server.SERVICE_NAME,
        lambda channel: detector_grpc.DetectorServiceStub(channel).Detect,
        [detector_pb.DetectRequest(image=image_to_raw(page)) for page in pages],
    )
    assert sizes == [4, 1, 1, 1, 1]  # one call together (the resized page in a network call of its own), then alone
    assert min(len(result.detections) for result in alone) > 50
    assert together == alone


async def test_recognizer_reads_concurrent_requests_crops_in_one_call_as_it_would_alone(sample_page):
    """Under load one model call holds several requests' crops, padded to each other's widths: a crop must read the
    same as when its request is served alone (the decoder attends to the crop's own columns only)."""
    import json

    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR

    settings = RecognizerSettings(
        host="127.0.0.1", port=0, recognizer_model_dir=str(DEFAULT_RECOGNIZER_DIR), batch_wait_ms=500
    )
    gray = Image.open(sample_page).convert("L")
    words = json.loads(sample_page.with_suffix(".json").read_text())["words"]
    crops = sorted((cut_crop(gray, tuple(w["box"])) for w in words), key=lambda c: c.width / c.height)
    # five narrow words and three wide ones: in one call the fifth narrow word shares an encoder batch with them
    together, alone, sizes = await together_and_alone(
        recognizer_server.RecognizerServicer(settings),
        recognizer_grpc.add_RecognizerServiceServicer_to_server,
        recognizer_server.SERVICE_NAME,
        lambda channel: recognizer_grpc.RecognizerServiceStub(channel).Recognize,
        [recognizer_pb.RecognizeRequest(crops=[image_to_raw(c) for c in part]) for part in (crops[:5], crops[-3:])],
    )
    assert sizes == [8, 5, 3]  # one call together, then alone

    def readings(responses) -> list:
        return [(r.text, r.confidence) for response in responses for r in response.recognitions]

    assert all(text for text, _ in readings(alone))
    assert [text for text, _ in readings(together)] == [text for text, _ in readings(alone)]
    # the decoder in int8 (the default) scales each activation row on its own: the encoder's float noise between
    # batches can move a rounding step (recognizer card); scaling a whole batch at once moved one by 1.5e-3
    assert max(abs(a - b) for (_, a), (_, b) in zip(readings(together), readings(alone), strict=True)) < 1e-3


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n broken", b"GIF89a not allowed"])
async def test_detector_rejects_bad_images_and_keeps_serving(detector, content):
    stub = detector_grpc.DetectorServiceStub(detector)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Detect(detector_pb.DetectRequest(image=image_pb2.Image(content=content)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = details_of(caught.value)[0]
    assert bad_request.field_violations[0].field == "image.content"
    ok = await stub.Detect(
        detector_pb.DetectRequest(image=image_pb2.Image(content=png_bytes(Image.new("L", (64, 64)))))
    )
    assert ok.image_width == 64


async def test_reflection_only_where_a_setting_asks_for_it(recognizer):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_services(recognizer)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_recognizer_reads_a_batch_in_order(recognizer):
    stub = recognizer_grpc.RecognizerServiceStub(recognizer)
    crops = [image_to_raw(Image.new("L", (40 + 10 * i, 20), 255 - 40 * i)) for i in range(3)]
    response = await stub.Recognize(recognizer_pb.RecognizeRequest(crops=crops))
    assert len(response.recognitions) == 3
    assert all(0.0 <= r.confidence <= 1.0 for r in response.recognitions)
    # each result is what that crop reads alone (the order itself: test_recognizer_model)
    alone = [(await stub.Recognize(recognizer_pb.RecognizeRequest(crops=[crop]))).recognitions[0] for crop in crops]
    assert [(r.text, round(r.confidence, 4)) for r in response.recognitions] == [
        (r.text, round(r.confidence, 4)) for r in alone
    ]
    assert response.model
    empty = await stub.Recognize(recognizer_pb.RecognizeRequest())
    assert len(empty.recognitions) == 0


async def test_recognizer_names_the_bad_crop_and_the_limit(recognizer):
    stub = recognizer_grpc.RecognizerServiceStub(recognizer)
    good = image_to_raw(Image.new("L", (30, 20), 255))
    bad = image_pb2.Image(content=b"junk")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Recognize(recognizer_pb.RecognizeRequest(crops=[good, bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(caught.value)[0].field_violations[0].field == "crops[1].content"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Recognize(recognizer_pb.RecognizeRequest(crops=[good] * 9))
    assert details_of(caught.value)[1].reason == "TOO_MANY_CROPS"
    assert len((await stub.Recognize(recognizer_pb.RecognizeRequest(crops=[good]))).recognitions) == 1
