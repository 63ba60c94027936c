"""RecognizerService: gRPC in front of `Recognizer`. Run with `python -m services.recognizer.server`."""

from __future__ import annotations

import asyncio

import grpc
from PIL import Image

from handwriting.v1 import recognizer_service_pb2 as pb
from handwriting.v1 import recognizer_service_pb2_grpc as pb_grpc
from services.common import onnx_sessions
from services.common.images import ImageError, image_from_proto
from services.common.metrics import Metrics
from services.common.model_runner import BatchingRunner
from services.common.server import RunningServer, run, start_model_service
from services.common.servicer import ModelNotReady, rpc_errors
from services.common.settings import RecognizerSettings
from services.common.tracing import span
from services.recognizer.lexicon import find_lexicon
from services.recognizer.model import Recognizer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecognizerService"].full_name


class RecognizerServicer(pb_grpc.RecognizerServiceServicer):
    def __init__(self, settings: RecognizerSettings):
        self.settings = settings
        self.recognizer: Recognizer | None = None
        self.metrics = Metrics(settings.service_name, settings.metrics == "emf", settings.metrics_interval_seconds)
        # crops of concurrent requests (several pages' batches) read in one model call
        # each item a crop and whether it is a whole line (its request's `lines`)
        self.runner = BatchingRunner(
            lambda items: self.recognizer.predict([crop for crop, _ in items], [line for _, line in items]),
            max_items=settings.batch_max_crops,
            max_wait=settings.batch_wait_ms / 1000,
            max_queue=settings.batch_max_queue,
            concurrency=settings.batch_concurrency,
            on_batch=self._batch_done,
        )
        # what the scaling policy reads: crops waiting for the model, per task
        self.metrics.gauge("QueueDepth", lambda: self.runner.pending_items)
        self.metrics.declare_counts("Crops", "Batches")

    def _batch_done(self, crops: int, seconds: float) -> None:
        self.metrics.count("Batches")
        self.metrics.observe("BatchCrops", crops, "Count")
        self.metrics.observe("BatchMs", 1000 * seconds)

    async def Recognize(self, request: pb.RecognizeRequest, context: grpc.aio.ServicerContext) -> pb.RecognizeResponse:
        async with rpc_errors(context):
            if self.recognizer is None:
                raise ModelNotReady("the recognizer model is still loading")
            if len(request.crops) > self.settings.max_crops_per_request:
                raise ImageError(
                    "TOO_MANY_CROPS",
                    f"{len(request.crops)} crops; at most {self.settings.max_crops_per_request} per request",
                    "crops",
                )
            crops = [image_from_proto(crop, self.settings, f"crops[{i}]") for i, crop in enumerate(request.crops)]
            self.metrics.count("Crops", len(crops))
            remaining = context.time_remaining()
            deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
            with span("recognize_batch", batch_size=len(crops)):
                results = await self.runner.run([(crop, request.lines) for crop in crops], deadline)
            return pb.RecognizeResponse(
                recognitions=[
                    pb.Recognition(text=r.text, confidence=r.confidence, char_positions=r.char_positions)
                    for r in results
                ],
                model=self.recognizer.model_name,
            )

    def load(self) -> None:
        if self.settings.torch_threads:
            onnx_sessions.set_threads(self.settings.torch_threads)
        lexicon = find_lexicon(self.settings.recognizer_model_dir, self.settings.lexicon, self.settings.lexicon_weight)
        self.recognizer = Recognizer(
            self.settings.recognizer_model_dir,
            device=self.settings.device,
            beam_size=self.settings.beam_size,
            max_new_tokens=self.settings.max_new_tokens,
            batch_size=self.settings.model_batch,
            lexicon=lexicon,
            n_best=self.settings.lexicon_n_best,
            ctc_weight=self.settings.ctc_weight,
            backend=self.settings.backend,
            deslant_below=self.settings.deslant_below,
            encoder_onnx=self.settings.encoder_onnx or None,
            encoder_batch_size=self.settings.encoder_batch_size,
            workers=self.settings.recognizer_workers,
            dtype=self.settings.dtype,
            decoder_dtype=self.settings.decoder_dtype,
        )
        # warm-up before SERVING: the first calls pay for lazy initialisation and memory growth
        self.recognizer.predict([Image.new("L", (160, 40), 255), Image.new("L", (900, 48), 255)])


async def start(settings: RecognizerSettings) -> RunningServer:
    return await start_model_service(
        settings, RecognizerServicer(settings), pb_grpc.add_RecognizerServiceServicer_to_server, SERVICE_NAME
    )


def main() -> None:
    run(RecognizerSettings, start)


if __name__ == "__main__":
    main()
