"""The page pipeline: detect, group into lines, crop, recognise in concurrent batches, assemble.

One pipeline for the service, the evaluation and the benchmarks: the detector and recognizer are
passed in (gRPC stubs behind `services.orchestrator.downstream`, or the models in this process
behind `training.inprocess`), so what is measured is what is served. No gRPC here.

The recognizer reads word crops or, with `unit="line"`, one crop per line (the union of its word
boxes); a line's reading is then shared out to its word boxes by `assign_words`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from handwriting.v1 import geometry_pb2, page_pb2
from services.common import geometry
from services.common.crops import cut_crop, fit_within
from services.common.geometry import Box
from services.common.tracing import span
from services.orchestrator.layout import group_into_lines

UNITS = ("word", "line")


class Reading(Protocol):
    text: str
    confidence: float


class DetectorBackend(Protocol):
    async def detect(self, image: Image.Image, min_score: float, deadline: float) -> list[tuple[Box, float]]:
        """Word boxes with their scores, in the pixels of `image`."""


class RecognizerBackend(Protocol):
    async def recognize(self, crops: list[Image.Image], deadline: float) -> Sequence[Reading]:
        """One reading per crop, in order."""


@dataclass
class PageResult:
    page: page_pb2.Page
    detect_ms: float
    recognize_ms: float


@dataclass(frozen=True)
class PipelineOptions:
    detector_max_side: int = 1280  # the page is downscaled to this for detection; crops come from the full page
    batch_size: int = 32  # crops per recognizer call
    concurrency: int = 4  # recognizer calls in flight per page
    unit: str = "word"  # what the recognizer reads: "word" or "line" crops

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {self.unit!r}")


def bounding_poly(box: Box, width: int, height: int) -> geometry_pb2.BoundingPoly:
    left, top, right, bottom = box
    corners = ((left, top), (right, top), (right, bottom), (left, bottom))
    return geometry_pb2.BoundingPoly(
        vertices=[geometry_pb2.Vertex(x=round(x), y=round(y)) for x, y in corners],
        normalized_vertices=[geometry_pb2.NormalizedVertex(x=x / width, y=y / height) for x, y in corners],
    )


def assign_words(text: str, boxes: Sequence[Box]) -> list[str]:
    """Share a line's reading out to its word boxes (left to right): one text per box, "" for none.

    As many words as boxes: one each. Otherwise each word goes to the box under its estimated centre,
    the line's width shared out in proportion to characters, and words that land on one box are joined.
    """
    words = text.split()
    if len(words) == len(boxes) or not boxes:
        return words if boxes else []
    left, right = boxes[0][0], max(b[2] for b in boxes)
    total = sum(len(w) for w in words) + len(words) - 1
    texts: list[list[str]] = [[] for _ in boxes]
    # boundaries between boxes: midway through the gap between neighbours
    cuts = [(boxes[i][2] + boxes[i + 1][0]) / 2 for i in range(len(boxes) - 1)]
    offset = 0
    for word in words:
        centre = left + (right - left) * (offset + len(word) / 2) / max(1, total)
        offset += len(word) + 1
        texts[sum(centre > cut for cut in cuts)].append(word)
    return [" ".join(t) for t in texts]


class OcrPipeline:
    def __init__(self, options: PipelineOptions, detector: DetectorBackend, recognizer: RecognizerBackend):
        self.options = options
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
            line_boxes = [geometry.union(boxes[i] for i in line) for line in lines]
            gray = image.convert("L")
            if self.options.unit == "line":
                crops = [cut_crop(gray, box) for box in line_boxes]
            else:
                crops = [cut_crop(gray, boxes[i]) for line in lines for i in line]
        started = time.perf_counter()
        readings = iter(await self._recognize(crops, deadline))
        recognize_ms = 1000 * (time.perf_counter() - started)

        with span("assemble"):
            for line, line_box in zip(lines, line_boxes, strict=True):
                if self.options.unit == "line":
                    reading = next(readings)
                    texts = assign_words(reading.text, [boxes[i] for i in line])
                    confidences = [reading.confidence] * len(line)
                else:
                    line_readings = [next(readings) for _ in line]
                    texts = [r.text for r in line_readings]
                    confidences = [r.confidence for r in line_readings]
                line_words = [
                    page_pb2.Word(
                        text=text,
                        confidence=confidence,
                        detection_confidence=words[index][1],
                        bounding_poly=bounding_poly(boxes[index], image.width, image.height),
                    )
                    for index, text, confidence in zip(line, texts, confidences, strict=True)
                    if text or self.options.unit == "word"  # a line's box that got none of its reading is left out
                ]
                if not line_words:
                    continue
                page.lines.append(
                    page_pb2.Line(
                        text=" ".join(w.text for w in line_words if w.text),
                        confidence=statistics.fmean(w.confidence for w in line_words),
                        bounding_poly=bounding_poly(line_box, image.width, image.height),
                        words=line_words,
                    )
                )
            page.text = "\n".join(line.text for line in page.lines)
            if page.lines:
                page.confidence = statistics.fmean(w.confidence for line in page.lines for w in line.words)
        return PageResult(page, detect_ms, recognize_ms)

    async def _detect(self, image: Image.Image, deadline: float, min_score: float) -> list[tuple[Box, float]]:
        sent, _ = fit_within(image, self.options.detector_max_side)
        found = await self.detector.detect(sent, min_score, deadline)
        to_page_x, to_page_y = image.width / sent.width, image.height / sent.height
        words = []
        for box, score in found:
            scaled = geometry.scale_to(box, to_page_x, to_page_y, image.width, image.height)
            if scaled is not None:
                words.append((scaled, score))
        return words

    async def _recognize(self, crops: list[Image.Image], deadline: float) -> list[Reading]:
        size = self.options.batch_size
        batches = [crops[start : start + size] for start in range(0, len(crops), size)]
        gate = asyncio.Semaphore(self.options.concurrency)

        async def run(batch: list[Image.Image]) -> Sequence[Reading]:
            async with gate:
                with span("recognize_call", batch_size=len(batch)):
                    return await self.recognizer.recognize(batch, deadline)

        # a TaskGroup cancels the other batches as soon as one fails
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(batch)) for batch in batches]
        return [reading for task in tasks for reading in task.result()]
