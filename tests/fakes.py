"""Fake detector and recognizer as real gRPC servers, for tests about the orchestrator's logic."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from handwriting.v1 import detector_service_pb2 as detector_pb
from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import recognizer_service_pb2 as recognizer_pb
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc


class FakeDetector(detector_grpc.DetectorServiceServicer):
    """Returns fixed word boxes given in page fractions, scaled to the image it receives."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.fraction_boxes: list[tuple[float, float, float, float]] = []
        self.fail_with: grpc.StatusCode | None = None
        self.received_sizes: list[tuple[int, int]] = []

    async def Detect(self, request, context):
        if self.fail_with is not None:
            await context.abort(self.fail_with, "fake detector failure")
        width, height = request.image.raw.width, request.image.raw.height
        self.received_sizes.append((width, height))
        detections = [
            detector_pb.Detection(
                detection_class=detector_pb.DETECTION_CLASS_WORD,
                score=0.9,
                box=detector_pb.Box(left=left * width, top=t * height, right=r * width, bottom=b * height),
            )
            for left, t, r, b in self.fraction_boxes
        ]
        # a line box too: the orchestrator must ignore it for words
        detections.append(
            detector_pb.Detection(
                detection_class=detector_pb.DETECTION_CLASS_LINE,
                score=0.9,
                box=detector_pb.Box(left=0, top=0, right=width, bottom=height),
            )
        )
        return detector_pb.DetectResponse(detections=detections, image_width=width, image_height=height)


class FakeRecognizer(recognizer_grpc.RecognizerServiceServicer):
    """Reads a crop as the text registered for its darkest gray level; records batches and deadlines."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.texts: dict[int, str] = {}
        self.delay = 0.0
        self.fail_with: grpc.StatusCode | None = None
        self.failures_left = -1  # with fail_with: fail this many calls, then answer (negative: every call)
        self.batch_sizes: list[int] = []
        self.lines: list[bool] = []  # each call's RecognizeRequest.lines
        self.crop_sizes: list[tuple[int, int]] = []
        self.time_remaining: list[float | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = asyncio.Event()
        self.hold = False  # calls wait for `release` (tests watch `in_flight` through `changed`)
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def _set_in_flight(self, delta: int) -> None:
        async with self.changed:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.changed.notify_all()

    async def wait_in_flight(self, count: int, timeout: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.in_flight == count), timeout)

    async def Recognize(self, request, context):
        self.time_remaining.append(context.time_remaining())
        self.batch_sizes.append(len(request.crops))
        self.lines.append(request.lines)
        await self._set_in_flight(1)
        self.started.set()
        try:
            if self.hold:
                await self.release.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_with is not None and self.failures_left != 0:
                self.failures_left -= 1
                await context.abort(self.fail_with, "fake recognizer failure")
            results = []
            for crop in request.crops:
                self.crop_sizes.append((crop.raw.width, crop.raw.height))
                pixels = np.frombuffer(crop.raw.data, dtype=np.uint8)
                level = int(pixels.min())
                text = min(self.texts.items(), key=lambda item: abs(item[0] - level))[1] if self.texts else ""
                results.append(recognizer_pb.Recognition(text=text, confidence=0.5 + level / 1000))
            return recognizer_pb.RecognizeResponse(recognitions=results, model="fake")
        finally:
            await self._set_in_flight(-1)


async def start_fake(add, servicer, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port
