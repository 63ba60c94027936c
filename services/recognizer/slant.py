"""Slant of handwriting in a crop, and the crop sheared upright.

Real cursive leans (often by 30-45 degrees); the shipped encoder learnt its ink from mostly upright text.
The slant is the horizontal shear that makes the ink's columns most concentrated: the sum of squared
column counts of the ink pixels, sheared, over a grid of shears (the projection-profile method of slant
correction in handwriting recognition). Counts are split between neighbouring columns by the fractional
position, so that no shear is favoured by rounding.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# shear = tan(slant angle): -1..1 is -45..45 degrees, in steps of about 3 degrees
SHEARS = np.linspace(-1.0, 1.0, 41)
# below this contrast (95th - 5th percentile of gray) a crop has no ink to measure
MIN_CONTRAST = 20.0


def estimate_shear(crop: Image.Image) -> float:
    """The shear (x moves by shear x (y - height / 2)) that stands the crop's strokes upright; 0 for no ink."""
    gray = np.asarray(crop.convert("L"), dtype=np.float32)
    low, high = np.percentile(gray, 5), np.percentile(gray, 95)
    if high - low < MIN_CONTRAST:
        return 0.0
    ys, xs = np.nonzero(gray < (low + high) / 2)
    if len(xs) < 10:
        return 0.0
    ys = ys - gray.shape[0] / 2
    best_score, best_shear = -1.0, 0.0
    for shear in SHEARS:
        x = xs + shear * ys
        x -= x.min()
        left = np.floor(x).astype(np.int64)
        right_share = x - left
        size = int(left.max()) + 2
        counts = np.bincount(left, 1 - right_share, size) + np.bincount(left + 1, right_share, size)
        score = float(np.square(counts).sum())
        if score > best_score:
            best_score, best_shear = score, float(shear)
    return best_shear


def shear_crop(crop: Image.Image, shear: float) -> tuple[Image.Image, int]:
    """`crop` sheared by `shear`, widened to keep all of it, the new corners filled with its paper's gray; and
    the columns added. A point at x on the crop's middle row is at x + added / 2 in the result."""
    gray = crop.convert("L")
    width, height = gray.size
    added = math.ceil(abs(shear) * height)
    paper = int(np.percentile(np.asarray(gray), 90))
    # output x' = x + shear * (y - h / 2) + added / 2, so input x = x' - shear * y + shear * h / 2 - added / 2
    coefficients = (1.0, -shear, shear * height / 2 - added / 2, 0.0, 1.0, 0.0)
    sheared = gray.transform((width + added, height), Image.AFFINE, coefficients, Image.BILINEAR, fillcolor=paper)
    return sheared, added
