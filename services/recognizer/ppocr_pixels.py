"""What PP-OCR's encoder (`ppocr_encoder`) reads: a batch of crops as pixels, and which of its output columns
belong to which crop. numpy only: the torch-free serving path (`services.recognizer.onnx_bundle`) needs it too."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

MODEL_TYPE = "handwriting-ppocr-encoder"  # its config's model_type (ppocr_encoder.PPOCREncoderConfig)
# Room left white to the right of each crop, as a fraction of its width: without it PP-OCR drops the
# last letters of a line (real-dev CER of its CTC head alone: 0.27 with none, 0.10 with 0.25 and 0.5).
RIGHT_MARGIN = 0.25
# Contrast is stretched between these percentiles of each crop, so faint ink on yellowed paper reads
# like a clean scan (real-dev CER of the CTC head: 0.100 -> 0.091). A crop spanning fewer gray levels
# than MIN_CONTRAST (blank paper, a smudge) is left as it is rather than blown up into ink.
CONTRAST_PERCENTILES = (1, 99)
MIN_CONTRAST = 48
# How wide a crop is read against its aspect: 1 reads it as PP-OCR does; the shipped model's config sets 0.9 (its
# `width_scale`), which reads word crops 9% faster and real-dev no worse (models/recognizer/README.md).
WIDTH_SCALE = 1.0
# Pixels of the batch's padding, outside [-1, 1]: the encoder masks them out (`ppocr_encoder.split_padding`).
PADDING = -2.0


def crop_scales(width_scale: float, lines: bool | Sequence[bool], count: int) -> list[float]:
    """Each of `count` crops' width scale: the model's `width_scale` for word crops, 1 for whole lines (`lines`: one
    flag for all, or one per crop), where squeezing would close the spaces between the words."""
    flags = [lines] * count if isinstance(lines, bool) else list(lines)
    return [1.0 if line else width_scale for line in flags]


def content_width(width: int, crop_height: int, height: int, max_width: int, width_scale: float = WIDTH_SCALE) -> int:
    """The width in pixels a crop `width` x `crop_height` is read at: `height` tall, its aspect times `width_scale`,
    at most `max_width`."""
    return max(1, min(max_width, round(width * width_scale * height / max(1, crop_height))))


def own_width(content: int) -> int:
    """A crop's own width in the batch: its pixels and `RIGHT_MARGIN` of white paper, up to a multiple of 8 px (one
    encoder column per 8 pixels)."""
    return 8 * math.ceil(content * (1 + RIGHT_MARGIN) / 8)


def prepare_pixels(
    crops: list[Image.Image], height: int, max_width: int, width_scale: float | Sequence[float] = WIDTH_SCALE
) -> np.ndarray:
    """Crops of any mode -> (N, 3, height, W) float32 in [-1, 1] (PP-OCR's `(pixel / 255 - 0.5) / 0.5`).

    Each crop is made grayscale, contrast-stretched, resized to `height` keeping its aspect times `width_scale`
    (bilinear; one scale for all, or one per crop), squeezed to `max_width` if wider, given `RIGHT_MARGIN` of
    white paper (`own_width`) and copied into all three channels. The batch is then padded to its widest crop
    with `PADDING`, which the encoder masks out.
    """
    scales = [width_scale] * len(crops) if isinstance(width_scale, (int, float)) else list(width_scale)
    arrays = []
    for crop, scale in zip(crops, scales, strict=True):
        gray = np.asarray(crop if crop.mode == "L" else crop.convert("L"), dtype=np.float32)
        low, high = np.percentile(gray, CONTRAST_PERCENTILES)
        if high - low >= MIN_CONTRAST:
            gray = np.clip((gray - low) * (255.0 / (high - low)), 0, 255)
        stretched = gray.astype(np.uint8)
        new_width = content_width(stretched.shape[1], stretched.shape[0], height, max_width, scale)
        resized = Image.fromarray(stretched).resize((new_width, height), resample=Image.BILINEAR)
        own = np.ones((height, own_width(new_width)), dtype=np.float32)
        own[:, :new_width] = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
        arrays.append(own)
    width = max((a.shape[1] for a in arrays), default=8)
    batch = np.full((len(arrays), 3, height, width), PADDING, dtype=np.float32)
    for index, array in enumerate(arrays):
        batch[index, :, :, : array.shape[1]] = array
    return batch


def content_fraction(crop: Image.Image, height: int, max_width: int, width_scale: float = WIDTH_SCALE) -> float:
    """The share of a crop's own encoder columns that its pixels span (`prepare_pixels` adds a margin)."""
    content = content_width(crop.width, crop.height, height, max_width, width_scale)
    return content / own_width(content)


def owned_columns(pixels: np.ndarray, columns: int) -> list[int]:
    """How many of the `columns` output columns lie over each crop's own pixels (not the batch's padding), counted
    as the encoder's masks count them (`ppocr_encoder._columns`); padding fills whole columns: its first row tells."""
    padded = pixels[:, 0, 0, :] == PADDING
    owned = (~padded).sum(axis=1).astype(np.int64)
    total = pixels.shape[3]
    return [max(1, int(c)) for c in (owned * columns + total - 1) // total]
