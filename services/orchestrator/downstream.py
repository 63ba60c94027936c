"""The detector and recognizer services as the page pipeline's backends, over gRPC.

Every call gets the time left before the request's deadline, so nothing outlives its caller, and
a failure becomes a `DownstreamError` that names the stage and the status code to return.
"""

from __future__ import annotations

import asyncio

import grpc
from PIL import Image

from handwriting.v1 import detector_service_pb2 as detector_pb
from handwriting.v1 import detector_service_pb2_grpc as detector_grpc
from handwriting.v1 import recognizer_service_pb2 as recognizer_pb
from handwriting.v1 import recognizer_service_pb2_grpc as recognizer_grpc
from services.common.geometry import Box
from services.common.images import image_to_raw

# Codes passed on as they are; any other failure of a stage is our bug (we validated the input): INTERNAL.
PASSED_THROUGH = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


class DownstreamError(Exception):
    """A stage failed; carries the code to return and which stage it was."""

    def __init__(self, stage: str, code: grpc.StatusCode, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.code = code
        self.message = message


async def call(stage: str, method, request, deadline: float):
    """`method(request)` with the time left before `deadline` (an absolute `loop.time()`)."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise DownstreamError(stage, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call")
    try:
        return await method(request, timeout=remaining)
    except grpc.aio.AioRpcError as error:
        code = error.code() if error.code() in PASSED_THROUGH else grpc.StatusCode.INTERNAL
        raise DownstreamError(stage, code, error.details() or error.code().name) from error


class GrpcDetector:
    def __init__(self, stub: detector_grpc.DetectorServiceStub):
        self.stub = stub

    async def detect(self, image: Image.Image, min_score: float, deadline: float) -> list[tuple[Box, float]]:
        request = detector_pb.DetectRequest(
            image=image_to_raw(image), min_score=min_score, classes=[detector_pb.DETECTION_CLASS_WORD]
        )
        response = await call("detector", self.stub.Detect, request, deadline)
        return [
            ((d.box.left, d.box.top, d.box.right, d.box.bottom), d.score)
            for d in response.detections
            if d.detection_class == detector_pb.DETECTION_CLASS_WORD
        ]


class GrpcRecognizer:
    def __init__(self, stub: recognizer_grpc.RecognizerServiceStub):
        self.stub = stub

    async def recognize(
        self, crops: list[Image.Image], deadline: float, lines: bool = False
    ) -> list[recognizer_pb.Recognition]:
        request = recognizer_pb.RecognizeRequest(crops=[image_to_raw(crop) for crop in crops], lines=lines)
        response = await call("recognizer", self.stub.Recognize, request, deadline)
        if len(response.recognitions) != len(crops):
            raise DownstreamError(
                "recognizer",
                grpc.StatusCode.INTERNAL,
                f"sent {len(crops)} crops, got {len(response.recognitions)} results",
            )
        return list(response.recognitions)
