"""The page pipeline: detect, group into lines, crop, recognise in concurrent batches, assemble.

Talks to the detector and recognizer through their gRPC stubs; every downstream call gets the
time left before the request's deadline, so nothing outlives its caller.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass

import grpc
from PIL import Image

from handwriting.v1 import detector_service_pb2 as detector_pb
from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import geometry_pb2, page_pb2
from handwriting.v1 import recognizer_service_pb2 as recognizer_pb
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc
from services.common.crops import crop_word, fit_within, shrink_crop
from services.common.images import image_to_raw
from services.common.settings import OrchestratorSettings
from services.common.tracing import span
from services.orchestrator.layout import Box, group_into_lines

logger = logging.getLogger("handwriting.orchestrator")


class DownstreamError(Exception):
    """A stage failed; carries the code to return and which stage it was."""

    def __init__(self, stage: str, code: grpc.StatusCode, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.code = code
        self.message = message


@dataclass
class PageResult:
    page: page_pb2.Page
    detect_ms: float
    recognize_ms: float


def bounding_poly(box: Box, width: int, height: int) -> geometry_pb2.BoundingPoly:
    left, top, right, bottom = box
    corners = ((left, top), (right, top), (right, bottom), (left, bottom))
    return geometry_pb2.BoundingPoly(
        vertices=[geometry_pb2.Vertex(x=round(x), y=round(y)) for x, y in corners],
        normalized_vertices=[geometry_pb2.NormalizedVertex(x=x / width, y=y / height) for x, y in corners],
    )


class OcrPipeline:
    def __init__(
        self,
        settings: OrchestratorSettings,
        detector: detector_grpc.DetectorServiceStub,
        recognizer: recognizer_grpc.RecognizerServiceStub,
    ):
        self.settings = settings
        self.detector = detector
        self.recognizer = recognizer

    async def process(self, image: Image.Image, deadline: float, min_score: float = 0.0) -> PageResult:
        """OCR one decoded page. `deadline` is an absolute `loop.time()`."""
        started = time.perf_counter()
        with span("detect_call"):
            words = await self._detect(image, deadline, min_score)
        detect_ms = 1000 * (time.perf_counter() - started)
        page = page_pb2.Page(width=image.width, height=image.height)
        if not words:
            return PageResult(page, detect_ms, 0.0)

        with span("layout_and_crop", words=len(words)):
            boxes = [box for box, _ in words]
            lines = group_into_lines(boxes)
            order = [index for line in lines for index in line]
            gray = image.convert("L")
            crops = [shrink_crop(crop_word(gray, boxes[index])) for index in order]
        started = time.perf_counter()
        recognitions = await self._recognize(crops, deadline)
        recognize_ms = 1000 * (time.perf_counter() - started)

        with span("assemble"):
            by_index = dict(zip(order, recognitions, strict=True))
            all_confidences = []
            for line in lines:
                line_words = []
                for index in line:
                    box, score = words[index]
                    recognition = by_index[index]
                    line_words.append(
                        page_pb2.Word(
                            text=recognition.text,
                            confidence=recognition.confidence,
                            detection_confidence=score,
                            bounding_poly=bounding_poly(box, image.width, image.height),
                        )
                    )
                line_box = (
                    min(boxes[i][0] for i in line),
                    min(boxes[i][1] for i in line),
                    max(boxes[i][2] for i in line),
                    max(boxes[i][3] for i in line),
                )
                confidences = [w.confidence for w in line_words]
                all_confidences.extend(confidences)
                page.lines.append(
                    page_pb2.Line(
                        text=" ".join(w.text for w in line_words if w.text),
                        confidence=statistics.fmean(confidences),
                        bounding_poly=bounding_poly(line_box, image.width, image.height),
                        words=line_words,
                    )
                )
            page.text = "\n".join(line.text for line in page.lines)
            page.confidence = statistics.fmean(all_confidences)
        return PageResult(page, detect_ms, recognize_ms)

    async def _detect(self, image: Image.Image, deadline: float, min_score: float) -> list[tuple[Box, float]]:
        sent, _ = fit_within(image, self.settings.detector_max_side)
        request = detector_pb.DetectRequest(image=image_to_raw(sent), min_score=min_score)
        response = await self._call("detector", self.detector.Detect, request, deadline)
        to_page_x = image.width / response.image_width if response.image_width else 1.0
        to_page_y = image.height / response.image_height if response.image_height else 1.0
        words = []
        for detection in response.detections:
            if detection.detection_class != detector_pb.DETECTION_CLASS_WORD:
                continue
            b = detection.box
            box = (
                max(0.0, b.left * to_page_x),
                max(0.0, b.top * to_page_y),
                min(float(image.width), b.right * to_page_x),
                min(float(image.height), b.bottom * to_page_y),
            )
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                words.append((box, detection.score))
        return words

    async def _recognize(self, crops: list[Image.Image], deadline: float) -> list[recognizer_pb.Recognition]:
        size = self.settings.recognizer_batch_size
        batches = [crops[start : start + size] for start in range(0, len(crops), size)]
        gate = asyncio.Semaphore(self.settings.recognizer_concurrency)

        async def run(batch: list[Image.Image]) -> list[recognizer_pb.Recognition]:
            async with gate:
                with span("recognize_call", batch_size=len(batch)):
                    request = recognizer_pb.RecognizeRequest(crops=[image_to_raw(crop) for crop in batch])
                    response = await self._call("recognizer", self.recognizer.Recognize, request, deadline)
            if len(response.recognitions) != len(batch):
                raise DownstreamError(
                    "recognizer",
                    grpc.StatusCode.INTERNAL,
                    f"sent {len(batch)} crops, got {len(response.recognitions)} results",
                )
            return list(response.recognitions)

        # a TaskGroup cancels the other batches as soon as one fails
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(batch)) for batch in batches]
        return [recognition for task in tasks for recognition in task.result()]

    async def _call(self, stage: str, method, request, deadline: float):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise DownstreamError(stage, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call")
        try:
            return await method(request, timeout=remaining)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT or code not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.CANCELLED,
            ):  # we validated the input: a mismatch is our bug
                code = grpc.StatusCode.INTERNAL
            raise DownstreamError(stage, code, error.details() or code.name) from error
