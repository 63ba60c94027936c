"""The page pipeline: detect, group into lines, crop, recognise in concurrent batches, assemble.

One pipeline for the service, the evaluation and the benchmarks: the detector and recognizer are
passed in (gRPC stubs behind `services.orchestrator.downstream`, or the models in this process
behind `training.inprocess`), so what is measured is what is served. No gRPC here.

The recognizer reads word crops or, with `unit="line"`, one crop per straight line (the union of its
word boxes; a slanted line is read word by word); a line's reading is then shared out to its word
boxes by `assign_words`.
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
from services.common.crops import crop_box, cut_crop, fit_within
from services.common.geometry import Box
from services.common.tracing import span
from services.orchestrator.ink import GAP_RATIO, missed_words, part_overlaps
from services.orchestrator.layout import group_into_lines

UNITS = ("word", "line")
# A line whose box is taller than this x its tallest word is read word by word (see `is_straight`).
STRAIGHT_LINE_RATIO = 1.5
# Boxes this far apart (x the line's median box height) part words even where the recognizer read no space.
WORD_GAP_RATIO = 0.35


class Reading(Protocol):
    text: str
    confidence: float
    char_positions: Sequence[float]  # each character's x as a fraction of the crop's width; empty if unknown


class DetectorBackend(Protocol):
    async def detect(self, image: Image.Image, min_score: float, deadline: float) -> list[tuple[Box, float]]:
        """Word boxes with their scores, in the pixels of `image`."""


class RecognizerBackend(Protocol):
    async def recognize(self, crops: list[Image.Image], deadline: float, lines: bool = False) -> Sequence[Reading]:
        """One reading per crop, in order; `lines`: the crops are whole lines of words."""


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
    missed_words: bool = True  # read the ink in wide gaps between a line's words too (services.orchestrator.ink)
    missed_word_gap: float = GAP_RATIO  # a gap this wide (x the line's word height) is looked into

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


def assign_words(
    text: str, boxes: Sequence[Box], positions: Sequence[float] = (), span: tuple[float, float] | None = None
) -> list[tuple[list[int], str]]:
    """Share a line's reading out to its word boxes (left to right): each word read, with the boxes it covers.

    With `positions` (each character's x as a fraction of the crop, which spans `span` on the page), each
    character goes to the box under it (or the nearest), and a word ends at a space read or at a gap between
    boxes of at least WORD_GAP_RATIO x the line's box height; a word across boxes with no such gap takes them
    all (the detector split it). Without positions: as many words as boxes, one each; otherwise each word
    goes to the box under its estimated centre, the line's width shared out in proportion to characters.
    """
    if not boxes:
        return []
    if positions and span and len(positions) == len(text):
        return _by_position(text, boxes, [span[0] + p * (span[1] - span[0]) for p in positions])
    words = text.split()
    if len(words) == len(boxes):
        return [([index], word) for index, word in enumerate(words)]
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
    return [([index], " ".join(t)) for index, t in enumerate(texts) if t]


def is_straight(line_box: Box, word_boxes: Sequence[Box]) -> bool:
    """Whether a line's box is at most STRAIGHT_LINE_RATIO x as tall as its tallest word: level enough to read whole."""
    return line_box[3] - line_box[1] <= STRAIGHT_LINE_RATIO * max(b[3] - b[1] for b in word_boxes)


def _by_position(text: str, boxes: Sequence[Box], xs: Sequence[float]) -> list[tuple[list[int], str]]:
    height = statistics.median(b[3] - b[1] for b in boxes)
    words: list[tuple[list[int], str]] = []
    last, space = -1, False
    for char, x in zip(text, xs, strict=True):
        if char == " ":
            space = True
            continue
        index = next((i for i, box in enumerate(boxes) if box[0] <= x <= box[2]), None)
        if index is None:  # in a gap between boxes: the nearest one
            index = min(range(len(boxes)), key=lambda i: min(abs(x - boxes[i][0]), abs(x - boxes[i][2])))
        gap = index != last and last >= 0 and _gap(boxes[last], boxes[index]) >= WORD_GAP_RATIO * height
        if not words or space or gap:
            words.append(([index], char))
        else:
            indices, word = words[-1]
            words[-1] = (indices if index in indices else [*indices, index], word + char)
        last, space = index, False
    return words


def _gap(a: Box, b: Box) -> float:
    """Horizontal space between two boxes (negative when they overlap)."""
    return max(b[0] - a[2], a[0] - b[2])


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
            gray = image.convert("L")
            part_overlaps(gray, boxes, lines)
            found = len(boxes)  # boxes from here on are words the detector missed (detection confidence 0)
            if self.options.missed_words:
                for number, box in missed_words(gray, boxes, lines, self.options.missed_word_gap):
                    words.append((box, 0.0))
                    boxes.append(box)
                    lines[number] = sorted([*lines[number], len(boxes) - 1], key=lambda i: boxes[i][0])
            line_boxes = [geometry.union(boxes[i] for i in line) for line in lines]
            # a line is read whole when it is straight; a slanted or wavy one (its box much taller than its
            # words) word by word, so that no crop takes in its neighbours
            whole = [
                self.options.unit == "line" and is_straight(box, [boxes[i] for i in line])
                for line, box in zip(lines, line_boxes, strict=True)
            ]
            crops, crop_is_line = [], []
            for line, box, as_line in zip(lines, line_boxes, whole, strict=True):
                crops += [cut_crop(gray, box)] if as_line else [cut_crop(gray, boxes[i]) for i in line]
                crop_is_line += [as_line] * (1 if as_line else len(line))
        started = time.perf_counter()
        readings = iter(await self._recognize(crops, crop_is_line, deadline))
        recognize_ms = 1000 * (time.perf_counter() - started)

        with span("assemble"):
            for line, line_box, as_line in zip(lines, line_boxes, whole, strict=True):
                if as_line:  # each word read, with the boxes it covers
                    reading = next(readings)
                    left, _, right, _ = crop_box(line_box, image.width, image.height)
                    found = assign_words(reading.text, [boxes[i] for i in line], reading.char_positions, (left, right))
                    read = [([line[i] for i in indices], text, reading.confidence) for indices, text in found]
                else:
                    read = [([index], (r := next(readings)).text, r.confidence) for index in line]
                    # ink in a gap that reads as nothing was not a word
                    read = [(indices, text, c) for indices, text, c in read if text or indices[0] < found]
                line_words = [
                    page_pb2.Word(
                        text=text,
                        confidence=confidence,
                        detection_confidence=max(words[i][1] for i in indices),
                        bounding_poly=bounding_poly(
                            geometry.union(boxes[i] for i in indices), image.width, image.height
                        ),
                    )
                    for indices, text, confidence in read
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

    async def _recognize(self, crops: list[Image.Image], is_line: list[bool], deadline: float) -> list[Reading]:
        """Each crop's reading, in order: word crops and whole lines in calls of their own (the recognizer reads
        lines at their full width), `batch_size` crops a call, `concurrency` calls at once."""
        size = self.options.batch_size
        batches = []
        for lines in (False, True):
            indices = [i for i, flag in enumerate(is_line) if flag == lines]
            batches += [(indices[start : start + size], lines) for start in range(0, len(indices), size)]
        gate = asyncio.Semaphore(self.options.concurrency)

        async def run(indices: list[int], lines: bool) -> Sequence[Reading]:
            async with gate:
                with span("recognize_call", batch_size=len(indices)):
                    batch = [crops[i] for i in indices]
                    return await self.recognizer.recognize(batch, deadline, lines)

        # a TaskGroup cancels the other batches as soon as one fails
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(indices, lines)) for indices, lines in batches]
        readings: list[Reading | None] = [None] * len(crops)
        for (indices, _), task in zip(batches, tasks, strict=True):
            for index, reading in zip(indices, task.result(), strict=True):
                readings[index] = reading
        return readings
