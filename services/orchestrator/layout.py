"""Page layout: words into lines and lines into reading order, from word boxes alone.

Robust to slightly rotated or uneven lines: words are taken left to right and each joins the line
whose course (fitted through its word centres, slope clamped) passes closest to the word's centre,
if within 0.7 of a line height or if the word overlaps the line's last word vertically by half
(tall and short words differ in centre, not in overlap); otherwise it starts a new line. Lines are
then ordered top to bottom by where they cross the middle of the text. Single column; multi-column pages come later.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

Box = tuple[float, float, float, float]  # left, top, right, bottom

MAX_SLOPE = 0.15  # about 8.5 degrees
MAX_GAP_IN_HEIGHTS = 12.0  # a wider gap starts a new line (another column)


class _Line:
    def __init__(self, index: int, box: Box):
        self.indices = [index]
        self.centers = [_center(box)]
        self.heights = [box[3] - box[1]]
        self.right = box[2]
        self.last = box

    def slope(self) -> float:
        if len(self.centers) < 2:
            return 0.0
        xs = [c[0] for c in self.centers]
        ys = [c[1] for c in self.centers]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        var = sum((x - mean_x) ** 2 for x in xs)
        if var == 0:
            return 0.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
        # few words give a noisy slope: shrink it towards level until the line has evidence
        slope *= (len(xs) - 1) / (len(xs) + 1)
        return max(-MAX_SLOPE, min(MAX_SLOPE, slope))

    def y_at(self, x: float) -> float:
        """Where the line's course is at column x, extrapolated from its last word."""
        last_x, last_y = self.centers[-1]
        return last_y + self.slope() * (x - last_x)

    def height(self) -> float:
        return statistics.median(self.heights)

    def add(self, index: int, box: Box) -> None:
        self.indices.append(index)
        self.centers.append(_center(box))
        self.heights.append(box[3] - box[1])
        self.right = max(self.right, box[2])
        self.last = box

    def overlap(self, box: Box) -> float:
        """Vertical overlap of `box` with the line's last word carried along the line's slope,
        as a fraction of the smaller height: robust to ascenders and descenders."""
        shift = self.slope() * ((box[0] + box[2]) / 2 - self.centers[-1][0])
        top, bottom = self.last[1] + shift, self.last[3] + shift
        smaller = max(1e-6, min(box[3] - box[1], bottom - top))
        return max(0.0, min(box[3], bottom) - max(box[1], top)) / smaller


def _center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def group_into_lines(boxes: Sequence[Box]) -> list[list[int]]:
    """Indices of `boxes` grouped into lines, lines top to bottom, words left to right."""
    if not boxes:
        return []
    lines: list[_Line] = []
    for index in sorted(range(len(boxes)), key=lambda i: _center(boxes[i])[0]):
        box = boxes[index]
        center_x, center_y = _center(box)
        height = box[3] - box[1]
        best, best_distance = None, None
        for line in lines:
            reference = max(height, line.height())
            gap = box[0] - line.right
            if gap > MAX_GAP_IN_HEIGHTS * reference or box[0] < line.right - 0.5 * (box[2] - box[0]):
                continue  # too far right, or overlapping the line's last word: not the same line
            distance = abs(center_y - line.y_at(center_x)) / reference
            if distance > 0.7 and line.overlap(box) < 0.5:
                continue
            if best_distance is None or distance < best_distance:
                best, best_distance = line, distance
        if best is None:
            lines.append(_Line(index, box))
        else:
            best.add(index, box)
    middle = statistics.median(_center(b)[0] for b in boxes)
    lines.sort(key=lambda line: line.y_at(middle))
    return [sorted(line.indices, key=lambda i: boxes[i][0]) for line in lines]
