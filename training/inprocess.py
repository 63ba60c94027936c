"""The page pipeline with the models in this process (no gRPC): for evaluation and benchmarks.

Same steps as the orchestrator: the page fitted within its detector size, word boxes from the
detector, lines in reading order, crops with the shared crop logic, one recognizer call for all crops.
"""

from __future__ import annotations

from PIL import Image

from services.common.crops import crop_word, fit_within, shrink_crop
from services.common.settings import OrchestratorSettings
from services.detector.model import WORD, Detector
from services.orchestrator.layout import group_into_lines
from services.recognizer.model import Recognizer

MAX_SIDE = OrchestratorSettings.detector_max_side


def read_page(detector: Detector, recognizer: Recognizer, page: Image.Image) -> list[str]:
    """Lines of text on `page`, top to bottom."""
    sent, scale = fit_within(page, MAX_SIDE)
    boxes = [tuple(x / scale for x in d.box) for d in detector.predict(sent) if d.class_id == WORD]
    lines = group_into_lines(boxes)
    gray = page.convert("L")
    crops = [shrink_crop(crop_word(gray, boxes[i])) for line in lines for i in line]
    texts = iter(r.text for r in recognizer.predict(crops))
    return [" ".join(next(texts) for _ in line) for line in lines]
