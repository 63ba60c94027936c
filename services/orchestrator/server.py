"""OcrService, the public API. Run with `python -m services.orchestrator.server`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import unicodedata

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from handwriting import formats
from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import image_pb2
from handwriting.v1 import ocr_service_pb2 as pb
from handwriting.v1 import ocr_service_pb2_grpc as pb_grpc
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc
from services.common import errors, geometry
from services.common.crops import cut_crop
from services.common.documents import open_document
from services.common.images import ImageError, image_from_proto
from services.common.metrics import Metrics
from services.common.server import RunningServer, channel_options, create_server, run
from services.common.servicer import rpc_errors
from services.common.settings import OrchestratorSettings
from services.common.tracing import client_interceptors, span
from services.orchestrator.corrections import CorrectionStore, open_store
from services.orchestrator.downstream import DownstreamError, GrpcDetector, GrpcRecognizer
from services.orchestrator.pipeline import OcrPipeline, PipelineOptions

logger = logging.getLogger("handwriting.orchestrator")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OcrService"].full_name
RETRY_AFTER_SECONDS = 1.0  # about four pages' time on two cores: a few places free up meanwhile
# Calls to the stages are idempotent: one that finds a stage UNAVAILABLE (restarting, a dropped connection) is
# tried again twice, after 0.2 and 0.4 s, within the page's deadline (gRPC's own retry policy).
STAGE_RETRIES = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": f"handwriting.v1.{name}"} for name in ("DetectorService", "RecognizerService")],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


MAX_CORRECTION_CHARS = 127  # what the recognizer's decoder can be taught (128 positions with its end token)
PAGE_IMAGE_QUALITY = 92  # JPEG quality of the page images ProcessDocument returns on request


class OcrServicer(pb_grpc.OcrServiceServicer):
    def __init__(self, settings: OrchestratorSettings, pipeline: OcrPipeline, store: CorrectionStore | None = None):
        self.settings = settings
        self.pipeline = pipeline
        self.store = store or open_store(settings.corrections_uri)
        self.metrics = Metrics(settings.service_name, settings.metrics == "emf", settings.metrics_interval_seconds)
        self.metrics.gauge("PagesInFlight", lambda: self.in_flight)
        self.metrics.declare_counts("Pages", "Rejected", "Failed")
        self.in_flight = 0
        self.decodes = asyncio.Semaphore(settings.max_concurrent_decodes)

    async def ProcessPage(self, request: pb.ProcessPageRequest, context: grpc.aio.ServicerContext):
        await self._admit(context)
        try:
            started = time.perf_counter()
            deadline = self._deadline(context)
            async with rpc_errors(context):
                _check_score(request.min_detection_score)
                _check_formats(request.formats)
                with span("decode"):
                    async with self.decodes:  # in a thread: health checks and other calls go on meanwhile
                        image = await asyncio.to_thread(image_from_proto, request.image, self.settings, allow_raw=False)
                decode_ms = 1000 * (time.perf_counter() - started)
                page, timings = await self._read(image, deadline, request.min_detection_score, context, started)
                timings.decode_ms = decode_ms
                exports = [formats.export(page, f) for f in request.formats]
                return pb.ProcessPageResponse(page=page, timings=timings, exports=exports)
        finally:
            self.in_flight -= 1

    async def ProcessDocument(self, request: pb.ProcessDocumentRequest, context: grpc.aio.ServicerContext):
        """Each page of the document in turn, streamed as soon as it is read; the document holds one of the
        pages-in-flight places from its first page to its last."""
        await self._admit(context)
        try:
            deadline = self._deadline(context)
            async with rpc_errors(context):
                _check_score(request.min_detection_score)
                _check_formats(request.formats)
                async with self.decodes:
                    count, pages = await asyncio.to_thread(open_document, request.content, self.settings, request.dpi)
                for number in range(1, count + 1):
                    started = time.perf_counter()
                    with span("decode", page=number):
                        async with self.decodes:
                            image = await asyncio.to_thread(next, pages)
                    decode_ms = 1000 * (time.perf_counter() - started)
                    page, timings = await self._read(image, deadline, request.min_detection_score, context, started)
                    timings.decode_ms = decode_ms
                    name = f"page-{number}.png"
                    response = pb.ProcessDocumentResponse(
                        page_number=number,
                        page_count=count,
                        page=page,
                        timings=timings,
                        exports=[formats.export(page, f, name) for f in request.formats],
                    )
                    if request.include_page_image:
                        response.page_image.CopyFrom(await asyncio.to_thread(_jpeg, image))
                    yield response
        finally:
            self.in_flight -= 1

    async def UploadDocument(self, request: pb.UploadDocumentRequest, context: grpc.aio.ServicerContext):
        """ProcessDocument for a file sent as the raw HTTP body (Envoy puts it in `file`)."""
        document = pb.ProcessDocumentRequest(
            content=request.file.data,
            min_detection_score=request.min_detection_score,
            dpi=request.dpi,
            formats=request.formats,
            include_page_image=request.include_page_image,
        )
        async for r in self.ProcessDocument(document, context):
            yield pb.UploadDocumentResponse.FromString(r.SerializeToString())  # the same fields, numbered alike

    async def ExportPage(self, request: pb.ExportPageRequest, context: grpc.aio.ServicerContext):
        async with rpc_errors(context):
            _check_formats([request.format], "format")
            return pb.ExportPageResponse(export=formats.export(request.page, request.format, request.image_name))

    async def SubmitCorrection(self, request: pb.SubmitCorrectionRequest, context: grpc.aio.ServicerContext):
        """The word's crop, cut as the recognizer is given it, and the person's text go to the corrections store."""
        async with rpc_errors(context):
            text = unicodedata.normalize("NFC", request.text.strip())
            if not 0 < len(text) <= MAX_CORRECTION_CHARS:
                raise ImageError("BAD_TEXT", f"text must have 1 to {MAX_CORRECTION_CHARS} characters", "text")
            if any(unicodedata.category(c).startswith("C") for c in text):
                raise ImageError("BAD_TEXT", "text must not contain control characters", "text")
            if not 0.0 <= request.confidence <= 1.0:
                raise ImageError("BAD_CONFIDENCE", "confidence must be in [0, 1]", "confidence")
            async with self.decodes:
                image = await asyncio.to_thread(image_from_proto, request.image, self.settings, allow_raw=False)
            points = [(v.x, v.y) for v in request.bounding_poly.vertices]
            box = geometry.from_points(points) if points else (0, 0, 0, 0)
            inside = (max(0, box[0]), max(0, box[1]), min(image.width, box[2]), min(image.height, box[3]))
            if geometry.area(inside) < 4:
                raise ImageError("BAD_BOX", "bounding_poly must enclose a word inside the image", "bounding_poly")
            crop = await asyncio.to_thread(lambda: _png(cut_crop(image, inside)))  # the page to gray: off the loop
            record = {
                "text": text,
                "recognized_text": request.recognized_text,
                "confidence": round(request.confidence, 4),
                "source": request.source[:200],
                "box": list(inside),
                "image_size": [image.width, image.height],
            }
            correction_id = await asyncio.to_thread(self.store.put, crop, record)
            logger.info("correction", extra={"id": correction_id, "chars": len(text)})
            return pb.SubmitCorrectionResponse(correction_id=correction_id)

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """Admission first, before any work: a page that cannot start now is refused in microseconds."""
        if self.in_flight >= self.settings.max_pages_in_flight:
            self.metrics.count("Rejected")
            await context.abort_with_status(
                errors.overloaded("the service is busy; retry after the delay in RetryInfo", RETRY_AFTER_SECONDS)
            )
        self.in_flight += 1

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        remaining = remaining if remaining is not None else self.settings.default_deadline_seconds
        return asyncio.get_running_loop().time() + remaining

    async def _read(self, image, deadline: float, min_score: float, context, started: float):
        """The page through the pipeline: (Page, Timings); a failed stage ends the call with its status."""
        try:
            result = await self.pipeline.process(image, deadline, min_score)
        except* DownstreamError as group:
            failure = group.exceptions[0]
            self.metrics.count("Failed")
            logger.warning(
                "downstream failed",
                extra={"stage": failure.stage, "code": failure.code.name, "detail": failure.message},
            )
            await context.abort_with_status(
                errors.error(
                    failure.code,
                    f"{failure.stage}: {failure.message}",
                    f"{failure.stage.upper()}_{failure.code.name}",
                    {"stage": failure.stage},
                    # a full model service: the page may be sent again, as past the admission limit
                    RETRY_AFTER_SECONDS if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED else None,
                )
            )
        formats.flag_for_review(result.page, self.settings.review_below)
        total_ms = 1000 * (time.perf_counter() - started)
        self.metrics.count("Pages")
        for name, value in (("PageMs", total_ms), ("DetectMs", result.detect_ms), ("RecognizeMs", result.recognize_ms)):
            self.metrics.observe(name, value)
        logger.info(
            "page", extra={"words": sum(len(line.words) for line in result.page.lines), "total_ms": round(total_ms, 1)}
        )
        timings = pb.Timings(detect_ms=result.detect_ms, recognize_ms=result.recognize_ms, total_ms=total_ms)
        return result.page, timings


def _check_score(score: float) -> None:
    if not 0.0 <= score <= 1.0:
        raise ImageError("BAD_SCORE", "min_detection_score must be in [0, 1]", "min_detection_score")


def _check_formats(requested, field: str = "formats") -> None:
    for value in requested:
        if value not in formats.EXPORT_FORMATS:
            names = ", ".join(pb.ExportFormat.Name(f) for f in formats.EXPORT_FORMATS)
            raise ImageError("BAD_FORMAT", f"unknown export format {value}: use one of {names}", field)


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image) -> image_pb2.Image:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=PAGE_IMAGE_QUALITY)
    return image_pb2.Image(content=out.getvalue(), mime_type="image/jpeg")


async def watch_stages(running: RunningServer, channels: dict[str, grpc.aio.Channel], interval: float = 1.0) -> None:
    """The orchestrator's health follows its stages': NOT_SERVING while the detector or the recognizer is
    down (Envoy and load balancers then stop sending pages it would fail), SERVING again once both answer.
    A stage without a health service (UNIMPLEMENTED) counts as up: it answered."""
    stubs = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}
    serving = True
    while True:
        down = []
        for name, stub in stubs.items():
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=interval)
                if response.status != health_pb2.HealthCheckResponse.SERVING:
                    down.append(name)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    down.append(name)
        if serving != (not down):
            serving = not down
            await running.mark_serving(serving)
            logger.warning("stages", extra={"serving": serving, "down": down})
        await asyncio.sleep(interval)


def pipeline_options(settings: OrchestratorSettings) -> PipelineOptions:
    return PipelineOptions(
        detector_max_side=settings.detector_max_side,
        batch_size=settings.recognizer_batch_size,
        concurrency=settings.recognizer_concurrency,
        unit=settings.recognition_unit,
        missed_words=settings.missed_words,
    )


async def start(settings: OrchestratorSettings) -> RunningServer:
    interceptors = client_interceptors(settings)
    options = [*channel_options(settings), ("grpc.enable_retries", 1), ("grpc.service_config", STAGE_RETRIES)]
    detector_channel = grpc.aio.insecure_channel(settings.detector_address, options=options, interceptors=interceptors)
    recognizer_channel = grpc.aio.insecure_channel(
        settings.recognizer_address, options=options, interceptors=interceptors
    )
    pipeline = OcrPipeline(
        pipeline_options(settings),
        GrpcDetector(detector_grpc.DetectorServiceStub(detector_channel)),
        GrpcRecognizer(recognizer_grpc.RecognizerServiceStub(recognizer_channel)),
    )
    servicer = OcrServicer(settings, pipeline)
    running = await create_server(
        settings, [lambda s: pb_grpc.add_OcrServiceServicer_to_server(servicer, s)], [SERVICE_NAME], servicer.metrics
    )
    running.closers += [detector_channel.close, recognizer_channel.close]
    await running.mark_serving()
    channels = {"detector": detector_channel, "recognizer": recognizer_channel}
    running.tasks.append(asyncio.create_task(watch_stages(running, channels)))
    return running


def main() -> None:
    run(OrchestratorSettings, start)


if __name__ == "__main__":
    main()
