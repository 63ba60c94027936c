"""The page pipeline with the models in this process (no gRPC): for evaluation and benchmarks.

Same steps as the orchestrator: word boxes from the detector, lines in reading order, crops with
the shared crop logic, one recognizer call for all crops.
"""

from __future__ import annotations

from PIL import Image

from services.common.crops import crop_word
from services.detector.model import WORD, Detector
from services.orchestrator.layout import group_into_lines
from services.recognizer.model import Recognizer


def read_page(detector: Detector, recognizer: Recognizer, page: Image.Image) -> list[str]:
    """Lines of text on `page`, top to bottom."""
    boxes = [d.box for d in detector.predict(page) if d.class_id == WORD]
    lines = group_into_lines(boxes)
    gray = page.convert("L")
    crops = [crop_word(gray, boxes[i]) for line in lines for i in line]
    texts = iter(r.text for r in recognizer.predict(crops))
    return [" ".join(next(texts) for _ in line) for line in lines]
