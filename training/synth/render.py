"""Renders synthetic handwritten pages with word and line boxes.

Fonts give the letter shapes; everything else that makes them look like ink on paper is
added here: per-glyph jitter and rotation, baseline wobble, slant, stroke thickness, uneven
spacing, ink colours, paper (plain, ruled, grid, off-white, stains) and scan/photo effects
(noise, blur, JPEG, uneven light, slight perspective and page rotation).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from services.common import geometry
from training.synth.text import TextSampler

INKS = {
    "blue": (25, 45, 140),
    "black": (20, 20, 25),
    "pencil": (95, 95, 100),
    "dark-blue": (15, 25, 80),
}


@dataclass
class WordBox:
    text: str
    box: tuple[float, float, float, float]  # left, top, right, bottom in page pixels


@dataclass
class PageSample:
    image: Image.Image
    words: list[WordBox]
    lines: list[list[int]] = field(default_factory=list)  # indices into words, in reading order

    def line_boxes(self) -> list[tuple[tuple[float, float, float, float], str]]:
        return [
            (geometry.union(self.words[i].box for i in indices), " ".join(self.words[i].text for i in indices))
            for indices in self.lines
        ]


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render_word_mask(text: str, font_path: Path, size: int, rng: random.Random, style: dict) -> Image.Image:
    """Ink coverage (L, 255 = ink) of one word with glyph jitter, wobble, slant and stroke weight."""
    font = _font(str(font_path), size)
    ascent, descent = font.getmetrics()
    pad = size
    width = int(font.getlength(text) * (1 + style["spacing"]) + 2 * pad + size * 0.2 * len(text))
    height = ascent + descent + 2 * pad
    mask = Image.new("L", (max(width, 4), max(height, 4)), 0)
    x = float(pad)
    wobble_phase = rng.uniform(0, 2 * math.pi)
    for index, char in enumerate(text):
        advance = font.getlength(char)
        if char != " ":
            dy = style["wobble"] * size * math.sin(wobble_phase + index * 0.9) + rng.gauss(0, style["jitter"] * size)
            angle = rng.gauss(0, style["glyph_rotation"])
            glyph_box = font.getbbox(char)
            glyph_w = max(1, glyph_box[2] - min(0, glyph_box[0]) + 4)
            glyph = Image.new("L", (int(glyph_w + size * 0.5), height), 0)
            ImageDraw.Draw(glyph).text((2, pad), char, font=font, fill=255)
            if abs(angle) > 0.3:
                glyph = glyph.rotate(angle, resample=Image.BILINEAR, center=(glyph_w / 2, pad + ascent * 0.6))
            mask = ImageChops.lighter(mask, _shift(glyph, mask.size, int(round(x)) - 2, int(round(dy))))
        # uneven letter spacing, kept small so cursive joins stay close
        x += advance * (1 + style["spacing"] + rng.uniform(-0.04, 0.04))
    if style["stroke"] > 0:
        mask = mask.filter(ImageFilter.MaxFilter(3))
    elif style["stroke"] < 0:
        mask = mask.filter(ImageFilter.MinFilter(3)) if size > 40 else mask
    if abs(style["slant"]) > 0.01:
        shear = style["slant"]
        mask = mask.transform(
            (mask.width + int(abs(shear) * mask.height), mask.height),
            Image.AFFINE,
            (1, shear, -abs(shear) * mask.height if shear > 0 else 0, 0, 1, 0),
            resample=Image.BILINEAR,
        )
    bbox = mask.getbbox()
    return mask.crop(bbox) if bbox else mask.crop((0, 0, 1, 1))


def _shift(glyph: Image.Image, size: tuple[int, int], dx: int, dy: int) -> Image.Image:
    canvas = Image.new("L", size, 0)
    canvas.paste(glyph, (dx, dy))
    return canvas


def make_paper(width: int, height: int, rng: random.Random, line_pitch: int, top_margin: int) -> Image.Image:
    tone = rng.randint(228, 255)
    warm = rng.randint(0, 12)
    base = np.empty((height, width, 3), dtype=np.float32)
    base[..., 0] = tone
    base[..., 1] = tone - warm * 0.4
    base[..., 2] = tone - warm
    nprng = np.random.default_rng(rng.getrandbits(32))
    base += nprng.normal(0, rng.uniform(1, 5), (height, width, 1))
    paper = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(paper)
    kind = rng.random()
    if kind < 0.35:  # ruled
        color = (rng.randint(120, 190), rng.randint(150, 200), rng.randint(200, 240))
        for y in range(top_margin, height, line_pitch):
            draw.line([(0, y), (width, y)], fill=color, width=1)
        if rng.random() < 0.5:
            draw.line([(int(width * 0.08), 0), (int(width * 0.08), height)], fill=(220, 120, 120), width=1)
    elif kind < 0.5:  # grid
        step = max(12, line_pitch // 2)
        color = (rng.randint(170, 210),) * 2 + (rng.randint(200, 235),)
        for y in range(0, height, step):
            draw.line([(0, y), (width, y)], fill=color, width=1)
        for x in range(0, width, step):
            draw.line([(x, 0), (x, height)], fill=color, width=1)
    if rng.random() < 0.25:  # stains
        stain = Image.new("L", (width, height), 0)
        stain_draw = ImageDraw.Draw(stain)
        for _ in range(rng.randint(1, 3)):
            cx, cy, r = rng.randint(0, width), rng.randint(0, height), rng.randint(10, max(11, width // 4))
            stain_draw.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=rng.randint(15, 45))
        stain = stain.filter(ImageFilter.GaussianBlur(25))
        tint = Image.new("RGB", (width, height), (150, 120, 70))
        paper = Image.composite(tint, paper, stain)
    return paper


def random_hand(rng: random.Random) -> dict:
    """How one writer's hand deviates from the font: spacing, jitter, rotation, wobble, slant, weight."""
    return {
        "spacing": rng.uniform(-0.03, 0.08),
        "jitter": rng.uniform(0.0, 0.04),
        "glyph_rotation": rng.uniform(0, 5),
        "wobble": rng.uniform(0, 0.05),
        "slant": rng.uniform(-0.25, 0.3),
        "stroke": rng.choice([-1, 0, 0, 1]),
    }


def render_page(
    sampler: TextSampler,
    fonts: list[Path],
    rng: random.Random,
    width: int = 1000,
    height: int = 1300,
    effects: bool = True,
) -> PageSample:
    """One page in one hand (font, size, slant, ink) with ~8-12 lines of words."""
    font_path = rng.choice(fonts)
    size = rng.randint(26, 42)
    style = random_hand(rng)
    ink = INKS[rng.choice(list(INKS))]
    line_pitch = int(size * rng.uniform(1.5, 2.1))
    margin_left = rng.randint(30, 90)
    margin_top = rng.randint(30, 90)
    paper = make_paper(width, height, rng, line_pitch, margin_top)
    ink_layer = Image.new("L", (width, height), 0)
    words: list[WordBox] = []
    lines: list[list[int]] = []
    baseline = margin_top + size
    while baseline + size < height - 30:
        if rng.random() < 0.06:  # an empty line now and then
            baseline += line_pitch
            continue
        slope = rng.gauss(0, 0.012)
        x = margin_left + rng.randint(-10, 40)
        right_limit = width - rng.randint(30, 120)
        line: list[int] = []
        while True:
            text = sampler.word()
            mask = render_word_mask(text, font_path, size, rng, style)
            if x + mask.width > right_limit:
                break
            y = int(baseline + slope * (x - margin_left) - mask.height + size * 0.25 + rng.gauss(0, size * 0.03))
            ink_layer.paste(ImageChops.lighter(ink_layer.crop((x, y, x + mask.width, y + mask.height)), mask), (x, y))
            line.append(len(words))
            words.append(WordBox(text, (x, y, x + mask.width, y + mask.height)))
            x += mask.width + int(size * rng.uniform(0.35, 0.8))
        if line:
            lines.append(line)
        baseline += line_pitch + rng.randint(-3, 3)
    opacity = rng.uniform(0.75, 1.0)
    ink_alpha = ink_layer.point(lambda v: int(v * opacity))
    page = Image.composite(Image.new("RGB", (width, height), ink), paper, ink_alpha)
    sample = PageSample(page, words, lines)
    if effects:
        sample = apply_scan_effects(sample, rng)
    return sample


def render_strip(sampler: TextSampler, fonts: list[Path], rng: random.Random, effects: bool = True) -> PageSample:
    """A single line of 1-6 words cut tight, at 28-72 px: what users send when they crop one line or
    word (like IAM line images), so the detector also learns text much larger than on pages."""
    font_path = rng.choice(fonts)
    size = rng.randint(28, 72)
    style = random_hand(rng)
    masks = [(text, render_word_mask(text, font_path, size, rng, style)) for text in sampler.words(rng.randint(1, 6))]
    margin_x, margin_y = rng.randint(5, 40), rng.randint(4, 24)
    gaps = [int(size * rng.uniform(0.35, 0.8)) for _ in masks]
    width = 2 * margin_x + sum(m.width for _, m in masks) + sum(gaps[:-1])
    height = 2 * margin_y + max(m.height for _, m in masks) + size // 3
    paper = make_paper(width, height, rng, height * 2, height)
    ink_layer = Image.new("L", (width, height), 0)
    baseline = height - margin_y - size // 4
    words, x = [], margin_x
    for (text, mask), gap in zip(masks, gaps, strict=True):
        y = max(0, min(height - mask.height, int(baseline - mask.height + size * 0.25 + rng.gauss(0, size * 0.03))))
        ink_layer.paste(ImageChops.lighter(ink_layer.crop((x, y, x + mask.width, y + mask.height)), mask), (x, y))
        words.append(WordBox(text, (x, y, x + mask.width, y + mask.height)))
        x += mask.width + gap
    ink = INKS[rng.choice(list(INKS))]
    page = Image.composite(Image.new("RGB", (width, height), ink), paper, ink_layer.point(lambda v: int(v * 0.9)))
    sample = PageSample(page, words, [list(range(len(words)))])
    return apply_scan_effects(sample, rng, rotate=False) if effects else sample


def _transform_boxes(words: list[WordBox], mapping) -> list[WordBox]:
    result = []
    for word in words:
        left, top, right, bottom = word.box
        points = [mapping(px, py) for px, py in ((left, top), (right, top), (right, bottom), (left, bottom))]
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        result.append(WordBox(word.text, (min(xs), min(ys), max(xs), max(ys))))
    return result


def apply_scan_effects(sample: PageSample, rng: random.Random, rotate: bool = True) -> PageSample:
    image = sample.image
    words = sample.words
    width, height = image.size
    if rotate and rng.random() < 0.6:  # slight page rotation
        angle = rng.uniform(-1.5, 1.5)
        image = image.rotate(angle, resample=Image.BILINEAR, fillcolor=(235, 235, 235))
        cx, cy = width / 2, height / 2
        rad = math.radians(angle)
        cos, sin = math.cos(rad), math.sin(rad)
        words = _transform_boxes(
            words, lambda x, y: (cx + (x - cx) * cos + (y - cy) * sin, cy - (x - cx) * sin + (y - cy) * cos)
        )
    if rotate and rng.random() < 0.3:  # slight perspective: a keystone along y
        k = rng.uniform(-0.03, 0.03)
        # PIL's PERSPECTIVE maps output to input; approximate with a horizontal keystone
        coeffs = (1 + k, 0, -k * width / 2, 0, 1, 0, 0, 0, 1)
        image = image.transform(image.size, Image.PERSPECTIVE, coeffs, Image.BILINEAR, fillcolor=(235, 235, 235))
        words = _transform_boxes(words, lambda x, y: ((x + k * width / 2) / (1 + k), y))
    array = np.asarray(image).astype(np.float32)
    if rng.random() < 0.6:  # uneven light
        gx = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.05), width, dtype=np.float32)
        gy = np.linspace(rng.uniform(0.8, 1.05), rng.uniform(0.8, 1.05), height, dtype=np.float32)
        array *= (gy[:, None] * gx[None, :])[..., None]
    if rng.random() < 0.7:
        array += np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 9), array.shape)
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.6:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(35, 90))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    words = [
        WordBox(w.text, (max(0, w.box[0]), max(0, w.box[1]), min(width, w.box[2]), min(height, w.box[3])))
        for w in words
    ]
    return PageSample(image, words, sample.lines)
