"""DetectorService: gRPC in front of `Detector`. Run with `python -m services.detector.server`."""

from __future__ import annotations

import asyncio
import time

import grpc

from handwriting.v1 import detector_service_pb2 as pb
from handwriting.v1 import detector_service_pb2_grpc as pb_grpc
from services.common import onnx_sessions
from services.common.geometry import LINE, WORD
from services.common.images import image_from_proto
from services.common.metrics import Metrics
from services.common.model_runner import BatchingRunner
from services.common.server import RunningServer, run, start_model_service
from services.common.servicer import ModelNotReady, rpc_errors
from services.common.settings import DetectorSettings
from services.common.tracing import span
from services.detector.model import Detector

CLASSES = {WORD: pb.DETECTION_CLASS_WORD, LINE: pb.DETECTION_CLASS_LINE}
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DetectorService"].full_name


class DetectorServicer(pb_grpc.DetectorServiceServicer):
    def __init__(self, settings: DetectorSettings):
        self.settings = settings
        self.detector: Detector | None = None
        # the pages of concurrent requests found in one network call (a batch of pages of one padded size)
        self.runner = BatchingRunner(
            lambda pages: self.detector.predict_batch(pages),
            max_items=settings.batch_max_pages,
            max_wait=settings.batch_wait_ms / 1000,
            max_queue=settings.batch_max_queue,
            on_batch=self._batch_done,
        )
        self.metrics = Metrics(settings.service_name, settings.metrics == "emf", settings.metrics_interval_seconds)
        self.metrics.gauge("QueueDepth", lambda: self.runner.pending)  # pages waiting for the model, per task
        self.metrics.declare_counts("Pages", "Batches")

    def _batch_done(self, pages: int, seconds: float) -> None:
        self.metrics.count("Batches")
        self.metrics.observe("BatchPages", pages, "Count")
        self.metrics.observe("BatchMs", 1000 * seconds)

    async def Detect(self, request: pb.DetectRequest, context: grpc.aio.ServicerContext) -> pb.DetectResponse:
        async with rpc_errors(context):
            if self.detector is None:
                raise ModelNotReady("the detector model is still loading")
            image = image_from_proto(request.image, self.settings)
            remaining = context.time_remaining()
            deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
            started = time.perf_counter()
            with span("detect", image_width=image.width, image_height=image.height):
                [detections] = await self.runner.run([(image, request.min_score or None)], deadline)
            self.metrics.count("Pages")
            self.metrics.observe("DetectMs", 1000 * (time.perf_counter() - started))
            wanted = set(request.classes) or set(CLASSES.values())
            return pb.DetectResponse(
                image_width=image.width,
                image_height=image.height,
                detections=[
                    pb.Detection(
                        detection_class=CLASSES[d.class_id],
                        box=pb.Box(left=d.box[0], top=d.box[1], right=d.box[2], bottom=d.box[3]),
                        score=d.score,
                    )
                    for d in detections
                    if CLASSES.get(d.class_id) in wanted
                ],
            )

    def load(self) -> None:
        if self.settings.torch_threads:
            onnx_sessions.set_threads(self.settings.torch_threads)
        self.detector = Detector(
            self.settings.detector_weights,
            device=self.settings.device,
            image_size=self.settings.detector_image_size,
            min_score=self.settings.detector_min_score,
            iou=self.settings.detector_iou,
            extend_score=self.settings.detector_extend_score,
            backend=self.settings.backend,
        )  # warmed up before SERVING: the Detector runs a page through the network as it loads


async def start(settings: DetectorSettings) -> RunningServer:
    return await start_model_service(
        settings, DetectorServicer(settings), pb_grpc.add_DetectorServiceServicer_to_server, SERVICE_NAME
    )


def main() -> None:
    run(DetectorSettings, start)


if __name__ == "__main__":
    main()
