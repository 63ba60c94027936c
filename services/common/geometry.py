"""Boxes on a page, written once: every service, the training data and the evaluation use these.

A box is `(left, top, right, bottom)` in pixels of the image it was found on, right and bottom
exclusive, as PIL's `crop` takes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]

# The detector's classes: ids of the YOLO dataset and of the trained model's outputs.
WORD, LINE = 0, 1
CLASS_NAMES = {WORD: "word", LINE: "line"}


def union(boxes: Iterable[Sequence[float]]) -> Box:
    """The smallest box holding all of `boxes` (at least one)."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("union of no boxes")
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def from_points(points: Iterable[tuple[float, float]]) -> Box:
    """The bounding box of (x, y) points, e.g. a polygon's vertices."""
    points = list(points)
    if not points:
        raise ValueError("bounding box of no points")
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return (min(xs), min(ys), max(xs), max(ys))


def area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    """Area of the overlap of two boxes (0 when they do not overlap)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union, in [0, 1]."""
    shared = intersection(a, b)
    total = area(a) + area(b) - shared
    return shared / total if total > 0 else 0.0


def contained(a: Sequence[float], b: Sequence[float], fraction: float) -> bool:
    """Whether at least `fraction` of the smaller of the two boxes lies inside the other."""
    shared = intersection(a, b)
    return shared > 0 and shared >= fraction * min(area(a), area(b))


def scale_to(box: Sequence[float], scale_x: float, scale_y: float, width: int, height: int) -> Box | None:
    """`box` scaled into an image of `width` x `height` and clipped to it; None when under 1 px either way."""
    scaled = (
        max(0.0, box[0] * scale_x),
        max(0.0, box[1] * scale_y),
        min(float(width), box[2] * scale_x),
        min(float(height), box[3] * scale_y),
    )
    if scaled[2] - scaled[0] < 1 or scaled[3] - scaled[1] < 1:
        return None
    return scaled


def padded(box: Sequence[float], padding: float, width: int, height: int) -> tuple[int, int, int, int]:
    """`box` grown by `padding` px on every side, outward to whole pixels, clipped to the image."""
    left, top, right, bottom = box
    return (
        max(0, int(left - padding)),
        max(0, int(top - padding)),
        min(width, int(round(right + padding))),
        min(height, int(round(bottom + padding))),
    )
