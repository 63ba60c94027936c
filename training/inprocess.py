"""The service's page pipeline with the models in this process instead of behind gRPC.

Evaluation and benchmarks call `read_page`, which runs `services.orchestrator.pipeline.OcrPipeline`
(the orchestrator's own code) with the detector and recognizer models passed in directly.
"""

from __future__ import annotations

import asyncio
import math

from PIL import Image

from services.common.geometry import WORD, Box
from services.common.settings import OrchestratorSettings
from services.detector.model import Detector
from services.orchestrator.pipeline import OcrPipeline, PageResult, PipelineOptions
from services.recognizer.model import Recognition, Recognizer


class InProcessDetector:
    def __init__(self, detector: Detector):
        self.detector = detector

    async def detect(self, image: Image.Image, min_score: float, deadline: float) -> list[tuple[Box, float]]:
        detections = self.detector.predict(image, min_score or None)
        return [(d.box, d.score) for d in detections if d.class_id == WORD]


class InProcessRecognizer:
    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer

    async def recognize(self, crops: list[Image.Image], deadline: float, lines: bool = False) -> list[Recognition]:
        return self.recognizer.predict(crops, lines)


def default_options(**overrides) -> PipelineOptions:
    """The orchestrator's defaults; the whole page goes to the recognizer in one call (the model batches it)."""
    settings = OrchestratorSettings()
    options = {
        "detector_max_side": settings.detector_max_side,
        "batch_size": 10**6,
        "concurrency": 1,
        "unit": settings.recognition_unit,
        "missed_words": settings.missed_words,
    }
    return PipelineOptions(**{**options, **overrides})


def process_page(
    detector: Detector, recognizer: Recognizer, page: Image.Image, options: PipelineOptions | None = None
) -> PageResult:
    pipeline = OcrPipeline(options or default_options(), InProcessDetector(detector), InProcessRecognizer(recognizer))
    return asyncio.run(pipeline.process(page, deadline=math.inf))


def read_page(
    detector: Detector, recognizer: Recognizer, page: Image.Image, options: PipelineOptions | None = None
) -> list[str]:
    """Lines of text on `page`, top to bottom, as the service reads them."""
    return [line.text for line in process_page(detector, recognizer, page, options).page.lines]
