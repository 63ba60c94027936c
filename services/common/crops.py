"""The one crop function: serving and training data both cut the recognizer's input with `cut_crop`.

The recognizer must see in service what it saw in training, so the padding, the grayscale
conversion and the shrink to `MAX_CROP_HEIGHT` live here and nowhere else; a test pins the output.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from services.common import geometry

# Padding around a box, as a fraction of the box height, on every side (at least MIN_PADDING_PX).
PADDING_RATIO = 0.12
MIN_PADDING_PX = 2
# Crops taller than this are shrunk to it (bilinear, aspect kept) before they travel; models read 32-96 px.
MAX_CROP_HEIGHT = 96


def crop_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The integer region `cut_crop` takes for `box` on a `width` x `height` page."""
    padding = max(MIN_PADDING_PX, (box[3] - box[1]) * PADDING_RATIO)
    return geometry.padded(box, padding, width, height)


def cut_crop(page: Image.Image, box: Sequence[float]) -> Image.Image:
    """The recognizer's input for one word or line box: padded, 8-bit grayscale, at most MAX_CROP_HEIGHT tall.

    Convert the page to "L" once and pass that when cutting many crops: the result is the same.
    """
    gray = page if page.mode == "L" else page.convert("L")
    left, top, right, bottom = crop_box(box, gray.width, gray.height)
    if right <= left or bottom <= top:
        return Image.new("L", (1, 1), 255)
    crop = gray.crop((left, top, right, bottom))
    if crop.height <= MAX_CROP_HEIGHT:
        return crop
    width = max(1, round(crop.width * MAX_CROP_HEIGHT / crop.height))
    return crop.resize((width, MAX_CROP_HEIGHT), Image.BILINEAR)


def fit_within(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """`image` downscaled so its longer side is at most `max_side` (never upscaled), and the scale."""
    scale = min(1.0, max_side / max(image.width, image.height))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR), scale
