"""The orchestrator's logic against fake stages served over real gRPC."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import image_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc
from services.common.errors import details_of
from services.common.settings import OrchestratorSettings
from services.orchestrator import server as orchestrator_server
from tests.conftest import free_port, png_bytes, word_page
from tests.fakes import FakeDetector, FakeRecognizer, start_fake

PAGE_SIZE = (800, 400)
# (box in pixels, gray level, text), deliberately listed out of reading order
WORDS = [
    ((420, 210, 520, 250), 60, "five"),
    ((40, 40, 160, 80), 10, "one"),
    ((40, 200, 150, 245), 50, "four"),
    ((400, 50, 500, 85), 30, "three"),
    ((200, 45, 330, 82), 20, "two"),
    ((200, 205, 380, 248), 40, "and"),
]


@pytest.fixture(scope="module")
async def fakes():
    detector, recognizer = FakeDetector(), FakeRecognizer()
    detector_server, detector_port = await start_fake(detector_grpc.add_DetectorServiceServicer_to_server, detector)
    recognizer_server, recognizer_port = await start_fake(
        recognizer_grpc.add_RecognizerServiceServicer_to_server, recognizer
    )
    yield detector, recognizer, detector_port, recognizer_port
    await detector_server.stop(0)
    await recognizer_server.stop(0)


@pytest.fixture
async def stage(fakes):
    detector, recognizer, detector_port, recognizer_port = fakes
    detector.reset()
    recognizer.reset()
    detector.fraction_boxes = [
        (left / PAGE_SIZE[0], t / PAGE_SIZE[1], r / PAGE_SIZE[0], b / PAGE_SIZE[1]) for (left, t, r, b), _, _ in WORDS
    ]
    recognizer.texts = {level: text for _, level, text in WORDS}
    running = []

    async def start(**overrides):
        settings = OrchestratorSettings(
            **{
                "host": "127.0.0.1",
                "port": 0,
                "detector_address": f"127.0.0.1:{detector_port}",
                "recognizer_address": f"127.0.0.1:{recognizer_port}",
                "detector_max_side": 400,
                **overrides,
            }
        )
        server = await orchestrator_server.start(settings)
        running.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        return ocr_service_pb2_grpc.OcrServiceStub(channel), server

    yield detector, recognizer, start
    for server in running:
        await server.stop(0)


def page_request(image=None) -> ocr_service_pb2.ProcessPageRequest:
    image = image or word_page([(box, level) for box, level, _ in WORDS], size=PAGE_SIZE)
    return ocr_service_pb2.ProcessPageRequest(image=image_pb2.Image(content=png_bytes(image)))


async def test_page_is_assembled_in_reading_order_with_page_coordinates(stage):
    detector, recognizer, start = stage
    stub, _ = await start()
    response = await stub.ProcessPage(page_request(), timeout=10)
    page = response.page
    assert page.text == "one two three\nfour and five"
    assert [len(line.words) for line in page.lines] == [3, 3]
    assert detector.received_sizes == [(400, 200)]  # downscaled for the detector
    first = page.lines[0].words[0]
    assert [(v.x, v.y) for v in first.bounding_poly.vertices] == [(40, 40), (160, 40), (160, 80), (40, 80)]
    assert first.bounding_poly.normalized_vertices[2].x == pytest.approx(160 / 800)
    assert first.detection_confidence == pytest.approx(0.9)
    assert 0 < page.confidence <= 1 and response.timings.total_ms > 0
    line_box = page.lines[1].bounding_poly.vertices
    assert (line_box[0].x, line_box[0].y, line_box[2].x, line_box[2].y) == (40, 200, 520, 250)


async def test_word_crops_are_cut_from_the_full_page_with_the_shared_padding(stage):
    _, recognizer, start = stage
    stub, _ = await start()
    await stub.ProcessPage(page_request(), timeout=10)
    # "one" is (40, 40, 160, 80) on the full 800 x 400 page, found on a 400 x 200 copy: 40 px tall, so
    # 4.8 px of padding on every side -> (35, 35, 165, 85), in reading order (one two three four and five)
    assert recognizer.crop_sizes == [(130, 50), (139, 46), (109, 44), (121, 56), (191, 54), (110, 50)]


async def test_line_unit_reads_one_crop_per_line_and_shares_it_out(stage):
    _, recognizer, start = stage
    recognizer.texts = {10: "one two three", 40: "four and five"}  # a line crop reads as its darkest word
    stub, _ = await start(recognition_unit="line")
    page = (await stub.ProcessPage(page_request(), timeout=10)).page
    assert recognizer.batch_sizes == [2] and recognizer.lines == [True]  # read at their full width
    assert recognizer.crop_sizes[0] == (471, 56)  # union (40, 40, 500, 85), 45 px tall: 5.4 px padding
    assert page.text == "one two three\nfour and five"
    assert [w.text for w in page.lines[1].words] == ["four", "and", "five"]
    assert [(v.x, v.y) for v in page.lines[1].words[2].bounding_poly.vertices][0] == (420, 210)
    assert page.lines[0].words[0].confidence == pytest.approx(0.51)


async def test_crops_go_out_in_concurrent_batches(stage):
    _, recognizer, start = stage
    recognizer.hold = True
    stub, _ = await start(recognizer_batch_size=2, recognizer_concurrency=2)
    call = asyncio.ensure_future(stub.ProcessPage(page_request(), timeout=10))
    await recognizer.wait_in_flight(2)  # two batches out at once, the third waits for a free slot
    assert recognizer.batch_sizes == [2, 2]
    recognizer.release.set()
    response = await call
    assert response.page.text.split() == ["one", "two", "three", "four", "and", "five"]
    assert sorted(recognizer.batch_sizes) == [2, 2, 2]
    assert recognizer.max_in_flight == 2
    assert recognizer.lines == [False, False, False]  # word crops


async def test_word_crops_and_whole_lines_go_out_in_calls_of_their_own_and_come_back_in_order():
    """In line mode a slanted line's words are read as word crops beside the straight lines read whole: the recognizer
    reads the two at different widths, so they never share a call; the readings come back in the crops' order."""
    from PIL import Image

    from services.orchestrator.pipeline import OcrPipeline, PipelineOptions

    calls = []

    class Recorder:
        async def recognize(self, crops, deadline, lines=False):
            calls.append(([crop.width for crop in crops], lines))
            return [f"{'line' if lines else 'word'} {crop.width}" for crop in crops]

    pipeline = OcrPipeline(PipelineOptions(batch_size=2, unit="line"), None, Recorder())
    crops = [Image.new("L", (width, 10)) for width in (1, 2, 3, 4, 5)]
    readings = await pipeline._recognize(crops, [False, True, False, True, True], time.monotonic() + 5)
    assert readings == ["word 1", "line 2", "word 3", "line 4", "line 5"]
    assert sorted(calls) == [([1, 3], False), ([2, 4], True), ([5], True)]


async def test_page_without_words_is_empty_not_an_error(stage):
    detector, recognizer, start = stage
    detector.fraction_boxes = []
    stub, _ = await start()
    response = await stub.ProcessPage(page_request(), timeout=10)
    assert response.page.text == "" and len(response.page.lines) == 0
    assert response.page.width == PAGE_SIZE[0]
    assert recognizer.batch_sizes == []


@pytest.mark.parametrize(
    ("stage_name", "downstream", "expected"),
    [
        ("detector", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        ("detector", grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL),
        ("recognizer", grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("recognizer", grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL),
    ],
)
async def test_downstream_errors_are_mapped(stage, stage_name, downstream, expected):
    detector, recognizer, start = stage
    (detector if stage_name == "detector" else recognizer).fail_with = downstream
    stub, _ = await start()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(page_request(), timeout=10)
    assert caught.value.code() == expected
    info, *retry = details_of(caught.value)
    assert info.reason == f"{stage_name.upper()}_{expected.name}" and info.metadata["stage"] == stage_name
    # a full model service's refusal says when to send the page again, as the admission's does
    overloaded = expected == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [r.retry_delay.ToMilliseconds() for r in retry] == ([1000] if overloaded else [])


async def test_deadline_propagates_downstream(stage):
    _, recognizer, start = stage
    recognizer.delay = 5.0
    stub, _ = await start()
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(page_request(), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.perf_counter() - started < 2.5
    # The downstream call carries the caller's deadline, not the orchestrator's default; gRPC
    # rounds timeouts up on the wire (and clocks are coarse), hence the small tolerance.
    assert recognizer.time_remaining and all(r is not None and r <= 1.2 for r in recognizer.time_remaining)


async def test_dead_downstream_fails_fast_with_unavailable(stage):
    _, _, start = stage
    stub, _ = await start(detector_address=f"127.0.0.1:{free_port()}")
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(page_request(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.perf_counter() - started < 3


async def test_recognizer_killed_mid_request(stage):
    detector, _, start = stage
    killable = FakeRecognizer()
    killable.texts = {level: text for _, level, text in WORDS}
    killable.delay = 10.0
    server, port = await start_fake(recognizer_grpc.add_RecognizerServiceServicer_to_server, killable)
    stub, _ = await start(recognizer_address=f"127.0.0.1:{port}")
    call = asyncio.ensure_future(stub.ProcessPage(page_request(), timeout=30))
    await asyncio.wait_for(killable.started.wait(), 5)
    started = time.perf_counter()
    await server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.perf_counter() - started < 3


async def test_bad_image_is_invalid_argument_then_service_keeps_working(stage):
    _, _, start = stage
    stub, _ = await start()
    for content in (b"", b"not an image", png_bytes(word_page([], size=(10, 10)))[:30]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ProcessPage(ocr_service_pb2.ProcessPageRequest(image=image_pb2.Image(content=content)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(caught.value)[0].field_violations[0].field == "image.content"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(ocr_service_pb2.ProcessPageRequest())
    assert details_of(caught.value)[0].field_violations[0].field == "image"
    assert (await stub.ProcessPage(page_request(), timeout=10)).page.text


async def test_over_limit_image_is_rejected(stage):
    _, _, start = stage
    stub, _ = await start(max_image_pixels=10_000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(page_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(caught.value)[1].reason == "TOO_MANY_PIXELS"


async def test_graceful_shutdown_finishes_in_flight_calls(stage):
    _, recognizer, start = stage
    recognizer.hold = True
    stub, server = await start()
    call = asyncio.ensure_future(stub.ProcessPage(page_request(), timeout=10))
    await recognizer.wait_in_flight(1)
    stopping = asyncio.ensure_future(server.stop(5))

    async def health() -> int:
        return (await server.health.Check(health_pb2.HealthCheckRequest(), None)).status

    async def until_not_serving() -> None:
        while await health() != health_pb2.HealthCheckResponse.NOT_SERVING:
            await asyncio.sleep(0)  # let stop() run to its first step

    await asyncio.wait_for(until_not_serving(), 5)
    assert not call.done()
    recognizer.release.set()
    response = await call  # the in-flight call finishes during the grace period
    assert response.page.text.startswith("one")
    await stopping
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # and nothing new is accepted
        await stub.ProcessPage(page_request(), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_pages_over_the_admission_limit_are_refused_at_once_with_a_retry_delay(stage):
    _, recognizer, start = stage
    recognizer.hold = True
    stub, _ = await start(max_pages_in_flight=1)
    first = asyncio.ensure_future(stub.ProcessPage(page_request(), timeout=10))
    await recognizer.wait_in_flight(1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(page_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = details_of(caught.value)
    assert info.reason == "OVERLOADED" and retry.retry_delay.ToMilliseconds() == 1000
    assert caught.value.trailing_metadata().get("retry-after") == "1"  # what Envoy gives REST clients as the header
    assert "recognizer" not in caught.value.details()  # says nothing of the inside
    recognizer.release.set()
    assert (await first).page.text.startswith("one")
    assert (await stub.ProcessPage(page_request(), timeout=10)).page.text.startswith("one")  # room again


async def test_the_public_api_refuses_raw_pixels(stage):
    _, _, start = stage
    stub, _ = await start()
    raw = image_pb2.Image(raw=image_pb2.RawImage(width=10, height=10, channels=1, data=bytes(100)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProcessPage(ocr_service_pb2.ProcessPageRequest(image=raw), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(caught.value)[1].reason == "RAW_NOT_ACCEPTED"


async def test_a_malformed_protobuf_body_is_invalid_argument(stage):
    _, _, start = stage
    stub, server = await start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/handwriting.v1.OcrService/ProcessPage")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a length-delimited field longer than the body
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(caught.value)[1].reason == "MALFORMED_REQUEST"
    assert (await stub.ProcessPage(page_request(), timeout=10)).page.text.startswith("one")


def document(kind: str, pages: int = 3) -> bytes:
    """The test page `pages` times as one PDF or multi-page TIFF."""
    import io

    images = [word_page([(box, level) for box, level, _ in WORDS], size=PAGE_SIZE) for _ in range(pages)]
    buffer = io.BytesIO()
    options = {"resolution": 72} if kind == "PDF" else {}  # 72 dpi: a PDF point per pixel
    images[0].save(buffer, kind, save_all=True, append_images=images[1:], **options)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["PDF", "TIFF"])
async def test_a_document_streams_every_page_in_order(stage, kind):
    _, _, start = stage
    stub, _ = await start()
    request = ocr_service_pb2.ProcessDocumentRequest(content=document(kind), dpi=72)
    responses = [response async for response in stub.ProcessDocument(request, timeout=20)]
    assert [(r.page_number, r.page_count) for r in responses] == [(1, 3), (2, 3), (3, 3)]
    for response in responses:
        assert (response.page.width, response.page.height) == PAGE_SIZE  # 72 dpi: the page's own pixels
        assert [len(line.words) for line in response.page.lines] == [3, 3]
        if kind == "TIFF":  # lossless (Pillow writes PDF pages as JPEG, which moves the fake's gray levels)
            assert response.page.text == "one two three\nfour and five"


async def test_one_image_is_a_one_page_document(stage):
    _, _, start = stage
    stub, _ = await start()
    request = ocr_service_pb2.ProcessDocumentRequest(content=page_request().image.content)
    responses = [response async for response in stub.ProcessDocument(request, timeout=20)]
    assert len(responses) == 1 and responses[0].page.text.startswith("one")


async def test_bad_documents_are_invalid_argument_with_a_reason(stage):
    import io

    import pypdf

    _, _, start = stage
    stub, _ = await start(max_document_pages=2)
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(document("PDF", 1)))
    writer.encrypt("secret", algorithm="AES-128")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    cases = {
        "CORRUPT_DOCUMENT": b"%PDF-1.7\nnot really a pdf",
        "ENCRYPTED_DOCUMENT": encrypted.getvalue(),
        "TOO_MANY_PAGES": document("PDF", 3),
        "EMPTY_DOCUMENT": b"",
        "UNSUPPORTED_IMAGE": b"plain text",
    }
    for reason, content in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ProcessDocument(ocr_service_pb2.ProcessDocumentRequest(content=content), timeout=20):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert details_of(caught.value)[1].reason == reason


async def test_a_stage_that_is_unavailable_for_a_moment_is_tried_again(stage):
    _, recognizer, start = stage
    recognizer.fail_with, recognizer.failures_left = grpc.StatusCode.UNAVAILABLE, 1
    stub, _ = await start()
    response = await stub.ProcessPage(page_request(), timeout=10)
    assert response.page.text == "one two three\nfour and five"  # the failed batch was sent again
    assert recognizer.failures_left == 0


async def test_exports_come_with_the_page_and_words_under_the_threshold_are_flagged(stage):
    from xml.etree import ElementTree

    _, _, start = stage
    stub, _ = await start(review_below=0.535)  # the fake reads gray levels 10..60 with confidence 0.51..0.56
    request = page_request()
    request.formats.extend([ocr_service_pb2.EXPORT_FORMAT_ALTO, ocr_service_pb2.EXPORT_FORMAT_TEXT])
    response = await stub.ProcessPage(request, timeout=10)
    flagged = [w.text for line in response.page.lines for w in line.words if w.needs_review]
    assert flagged == ["one", "two", "three"]
    alto, text = response.exports
    assert (alto.format, alto.file_extension, text.content) == (
        ocr_service_pb2.EXPORT_FORMAT_ALTO,
        ".alto.xml",
        "one two three\nfour and five\n",
    )
    strings = ElementTree.fromstring(alto.content).iter("{http://www.loc.gov/standards/alto/ns-v4#}String")
    assert [(s.get("CONTENT"), s.get("TAGREFS")) for s in strings][2:4] == [("three", "review"), ("four", None)]

    exported = await stub.ExportPage(
        ocr_service_pb2.ExportPageRequest(
            page=response.page, format=ocr_service_pb2.EXPORT_FORMAT_HOCR, image_name="letter.png"
        ),
        timeout=10,
    )
    assert "letter.png" in exported.export.content and "ocrx_word review" in exported.export.content

    for call, bad in (
        (stub.ProcessPage, ocr_service_pb2.ProcessPageRequest(image=request.image, formats=[0])),
        (stub.ExportPage, ocr_service_pb2.ExportPageRequest(page=response.page, format=9)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(bad, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(caught.value)[1].reason == "BAD_FORMAT"


async def test_a_document_can_return_each_page_image(stage):
    import io

    from PIL import Image

    _, _, start = stage
    stub, _ = await start()
    request = ocr_service_pb2.ProcessDocumentRequest(
        content=document("TIFF", 2), include_page_image=True, formats=[ocr_service_pb2.EXPORT_FORMAT_PAGE_XML]
    )
    responses = [response async for response in stub.ProcessDocument(request, timeout=20)]
    for response in responses:
        assert response.page_image.mime_type == "image/jpeg"
        assert Image.open(io.BytesIO(response.page_image.content)).size == PAGE_SIZE
        assert f'imageFilename="page-{response.page_number}.png"' in response.exports[0].content


def word_correction(box, text="seven", **fields) -> ocr_service_pb2.SubmitCorrectionRequest:
    from handwriting.v1 import geometry_pb2

    corners = [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])]
    return ocr_service_pb2.SubmitCorrectionRequest(
        image=page_request().image,
        bounding_poly=geometry_pb2.BoundingPoly(vertices=[geometry_pb2.Vertex(x=x, y=y) for x, y in corners]),
        text=text,
        **fields,
    )


async def test_a_correction_stores_the_crop_the_recognizer_is_given(stage, tmp_path):
    import io

    from PIL import Image

    from services.common.crops import cut_crop
    from services.orchestrator.corrections import DirectoryStore

    _, _, start = stage
    stub, _ = await start(corrections_uri=str(tmp_path / "corrections"))
    box = WORDS[1][0]  # "one"
    response = await stub.SubmitCorrection(
        word_correction(box, " ōne ", recognized_text="one", confidence=0.51, source="letter.png"), timeout=10
    )
    [(correction_id, crop, record)] = list(DirectoryStore(tmp_path / "corrections").items())
    assert correction_id == response.correction_id
    page = Image.open(io.BytesIO(page_request().image.content))
    assert Image.open(io.BytesIO(crop)).tobytes() == cut_crop(page, box).tobytes()
    assert (record["text"], record["recognized_text"], record["box"]) == ("ōne", "one", list(box))

    bad = {
        "BAD_TEXT": word_correction(box, ""),
        "BAD_BOX": word_correction((900, 900, 950, 950)),
        "BAD_CONFIDENCE": word_correction(box, confidence=2.0),
    }
    for reason, request in bad.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitCorrection(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert details_of(caught.value)[1].reason == reason
    assert len(list(DirectoryStore(tmp_path / "corrections").items())) == 1


def test_the_s3_store_keeps_the_same_objects():
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")

    from services.orchestrator.corrections import S3Store, open_store

    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="hw-corrections")
        store = S3Store("s3://hw-corrections/staging/", client=client)
        first = store.put(b"png-bytes", {"text": "seven"})
        store.put(b"other", {"text": "eight"})
        items = {i: (c, r["text"]) for i, c, r in store.items()}
        assert items[first] == (b"png-bytes", "seven") and len(items) == 2
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="hw-corrections")["Contents"])
        assert all(key.startswith("staging/") for key in keys) and len(keys) == 4
    assert isinstance(open_store("s3://bucket/prefix"), S3Store)


async def test_with_emf_metrics_on_the_orchestrator_writes_pages_latencies_and_pages_in_flight(stage, capsys):
    from tests.test_shared_code import emf_records

    _, _, start = stage
    stub, server = await start(metrics="emf", metrics_interval_seconds=0.2)
    await stub.ProcessPage(page_request(), timeout=10)
    await asyncio.sleep(0.5)
    await server.stop(0)  # the last record is written on the way out
    records = [r for r in emf_records(capsys.readouterr().out) if r.get("Service") == "orchestrator"]
    assert sum(r["Pages"] for r in records) == 1 and all(r["PagesInFlight"] == 0 for r in records)
    timed = [r for r in records if "PageMs" in r]
    assert len(timed) == 1 and timed[0]["PageMs"] > 0 and "RecognizeMs" in timed[0]
    assert len(records) >= 2  # a record every interval, pages or not: silence means the service stopped


async def test_a_word_the_detector_missed_between_two_it_found_is_read_from_the_ink(stage):
    detector, _, start = stage
    detector.fraction_boxes = [
        b for b, (_, _, text) in zip(detector.fraction_boxes, WORDS, strict=True) if text != "two"
    ]
    stub, _ = await start()
    page = (await stub.ProcessPage(page_request(), timeout=10)).page
    assert page.text == "one two three\nfour and five"
    missed = page.lines[0].words[1]
    assert missed.detection_confidence == 0 and missed.text == "two"
    left, top = missed.bounding_poly.vertices[0].x, missed.bounding_poly.vertices[0].y
    assert (left, top) == (200, 45)  # the ink's own box
    stub, _ = await start(missed_words=False)
    assert (await stub.ProcessPage(page_request(), timeout=10)).page.text == "one three\nfour and five"


async def test_pages_past_grpcs_old_fixed_limit_are_admitted_and_health_checks_pass_under_full_load(stage):
    """gRPC's own cap on calls in progress was 64 whatever the admission allowed: with more pages in flight
    allowed (a GPU's recognizer), the 65th page got "Concurrent RPC limit exceeded!" and health checks failed."""
    from grpc_health.v1 import health_pb2_grpc

    _, recognizer, start = stage
    recognizer.hold = True
    stub, server = await start(max_pages_in_flight=80)
    pages = [asyncio.ensure_future(stub.ProcessPage(page_request(), timeout=30)) for _ in range(70)]
    await recognizer.wait_in_flight(70, timeout=20)  # every page admitted, each at its recognizer call
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    recognizer.release.set()
    assert all(response.page.text.startswith("one") for response in await asyncio.gather(*pages))
