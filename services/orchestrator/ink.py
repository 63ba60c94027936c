"""Words the detector missed, and words whose boxes overlap, on a line: decided from the page's ink.

`part_overlaps`: words on a line do not overlap, yet a box the detector found (or grew) may reach into
its neighbour ("on line" read "on" + "n line"). Two neighbouring boxes that overlap are parted at the
lightest column of their overlap.

Missed words: ink in a wide gap between two words the detector found on the same line.

On real handwriting the detector (trained on synthetic pages) misses a word now and then between two it
found ("drugs" in "cost of drugs and", "is" in "corporeal, is far"); read word by word, that word is lost.
`missed_words` looks at each gap between neighbouring words of a line that is wider than GAP_RATIO x the
line's word height, and where the gap holds ink (darker than halfway between the neighbours' paper and
ink, in enough columns of the line's middle band) returns a box around it, to be read like any other word.
No gRPC, no model: numpy on the page's grayscale pixels.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
from PIL import Image

from services.common.geometry import Box

GAP_RATIO = 0.8  # a gap this wide (x the line's median word height) may hold a word
MIN_INK_COLUMNS = 0.3  # of the line's word height: less ink than that across is a stroke's tail, not a word
EDGE = 0.1  # of the height, left out next to each neighbour (their strokes' ends)


def missed_words(
    gray: Image.Image, boxes: Sequence[Box], lines: Sequence[Sequence[int]], gap_ratio: float = GAP_RATIO
) -> list[tuple[int, Box]]:
    """(the line's index, a box) for each word found in a gap of a line wider than `gap_ratio` x its word
    height; `lines` hold indices into `boxes`, left to right."""
    pixels = np.asarray(gray)
    found = []
    for number, line in enumerate(lines):
        if len(line) < 2:
            continue
        height = statistics.median(boxes[i][3] - boxes[i][1] for i in line)
        for left, right in zip(line, line[1:], strict=False):
            a, b = boxes[left], boxes[right]
            if b[0] - a[2] < gap_ratio * height:
                continue
            box = _ink_between(pixels, a, b, height)
            if box is not None:
                found.append((number, box))
    return found


def part_overlaps(gray: Image.Image, boxes: list[Box], lines: Sequence[Sequence[int]]) -> int:
    """Part, in place, each pair of neighbouring boxes of a line (`lines`: indices into `boxes`, left to right)
    that overlap across, at the column of the overlap with the least ink in the rows both span; a box that
    holds its neighbour whole is left alone. Returns how many pairs were parted."""
    pixels = np.asarray(gray)
    parted = 0
    for line in lines:
        for left, right in zip(line, line[1:], strict=False):
            a, b = boxes[left], boxes[right]
            top, bottom = int(max(a[1], b[1])), int(np.ceil(min(a[3], b[3])))
            x0, x1 = int(b[0]), int(np.ceil(a[2]))
            if not (a[0] < b[0] < a[2] < b[2]) or bottom <= top:  # apart, nested, or beside without shared rows
                continue
            # darkness per column of the shared rows; ties (a blank run) go to the middle of the run
            darkness = (255 - pixels[top:bottom, x0:x1].astype(np.int64)).sum(axis=0)
            lightest = np.flatnonzero(darkness == darkness.min())
            cut = min(max(float(x0 + lightest[len(lightest) // 2]), b[0]), a[2])
            boxes[left], boxes[right] = (a[0], a[1], cut, a[3]), (cut, b[1], b[2], b[3])
            parted += 1
    return parted


def _ink_between(pixels: np.ndarray, a: Box, b: Box, height: float) -> Box | None:
    top, bottom = int(min(a[1], b[1])), int(max(a[3], b[3]))
    x0, x1 = int(a[2] + EDGE * height), int(b[0] - EDGE * height)
    if x1 - x0 < MIN_INK_COLUMNS * height or bottom - top < 4:
        return None
    neighbours = np.concatenate(
        [pixels[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])].ravel() for box in (a, b)]
    )
    span = pixels[top:bottom, int(a[0]) : int(b[2])]  # the two words and the gap: mostly paper
    if neighbours.size == 0 or span.size == 0:
        return None
    paper, ink = np.percentile(span, 90), np.percentile(neighbours, 5)
    if paper - ink < 40:  # the neighbours themselves show no contrast: nothing to compare with
        return None
    dark = pixels[top:bottom, x0:x1] < (paper + ink) / 2
    middle = dark[int(0.25 * (bottom - top)) : int(0.75 * (bottom - top)) + 1]  # the x-height band
    columns = np.flatnonzero(middle.sum(axis=0) >= 2)
    if columns.size < MIN_INK_COLUMNS * height:
        return None
    rows = np.flatnonzero(dark[:, columns[0] : columns[-1] + 1].sum(axis=1) >= 1)
    return (float(x0 + columns[0]), float(top + rows[0]), float(x0 + columns[-1] + 1), float(top + rows[-1] + 1))
