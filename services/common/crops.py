"""Crop logic shared by the orchestrator (inference) and the training data generator.

Both sides must cut word crops the same way, or the recognizer sees a different
distribution in production than in training.
"""

from __future__ import annotations

from PIL import Image

# Padding around a detected box, as a fraction of the box height, on every side.
PADDING_RATIO = 0.12
MIN_PADDING_PX = 2


def padded_box(
    box: tuple[float, float, float, float], width: int, height: int, padding_ratio: float = PADDING_RATIO
) -> tuple[int, int, int, int]:
    """Return the integer (left, top, right, bottom) of `box` grown by the padding and clipped to the image."""
    left, top, right, bottom = box
    pad = max(MIN_PADDING_PX, (bottom - top) * padding_ratio)
    return (
        max(0, int(left - pad)),
        max(0, int(top - pad)),
        min(width, int(round(right + pad))),
        min(height, int(round(bottom + pad))),
    )


def fit_within(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """`image` downscaled so its longer side is at most `max_side` (never upscaled), and the scale."""
    scale = min(1.0, max_side / max(image.width, image.height))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR), scale


def crop_word(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """Cut one box out of a page as 8-bit grayscale, the recognizer's input."""
    gray = image if image.mode == "L" else image.convert("L")
    left, top, right, bottom = padded_box(box, gray.width, gray.height)
    if right <= left or bottom <= top:
        return Image.new("L", (1, 1), 255)
    return gray.crop((left, top, right, bottom))


MAX_CROP_HEIGHT = 96  # crops are downscaled to this before they travel; models read 32-384 px


def shrink_crop(crop: Image.Image) -> Image.Image:
    """A crop taller than MAX_CROP_HEIGHT scaled down to it, keeping its aspect ratio."""
    if crop.height <= MAX_CROP_HEIGHT:
        return crop
    width = max(1, round(crop.width * MAX_CROP_HEIGHT / crop.height))
    return crop.resize((width, MAX_CROP_HEIGHT), Image.BILINEAR)
