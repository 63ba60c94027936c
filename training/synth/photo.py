"""Phone photos of a handwritten page: the page lies on a table (wood, cloth, stone, a desk with things on it),
seen at an angle (a homography), under uneven light with a shadow across it, then blurred, noisy and
JPEG-compressed. Only the words on the paper are labelled, so the detector learns that wood grain and
table edges are not text.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.synth.render import PageSample, WordBox, render_page

PHOTO_SIZES = ((1200, 1600), (1536, 2048), (1600, 1200))  # portrait mostly, like phone cameras


def _smooth_noise(width: int, height: int, cells: int, nprng: np.random.Generator) -> np.ndarray:
    """Noise in [0, 1] that varies over about `cells` cells along the longer side (bicubic upsampling)."""
    scale = max(width, height) / max(1, cells)
    small = nprng.random((max(2, int(height / scale) + 2), max(2, int(width / scale) + 2))).astype(np.float32)
    image = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def _wood(width: int, height: int, rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.randint(110, 200), rng.randint(70, 140), rng.randint(35, 90)], dtype=np.float32)
    angle = math.radians(rng.uniform(-20, 20) + rng.choice([0, 90]))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    across = -xs * math.sin(angle) + ys * math.cos(angle)
    warp = _smooth_noise(width, height, rng.randint(3, 8), nprng) * rng.uniform(20, 80)
    period = rng.uniform(6, 30)
    grain = 0.5 + 0.5 * np.sin((across + warp) * 2 * math.pi / period)
    streaks = _smooth_noise(width, height, rng.randint(20, 60), nprng)
    shade = 1.0 - rng.uniform(0.1, 0.35) * grain ** rng.uniform(1, 4) - 0.15 * streaks
    planks = rng.random() < 0.5
    if planks:  # dark joints between planks
        pitch = rng.randint(150, 400)
        joints = (np.abs((xs * math.cos(angle) + ys * math.sin(angle)) % pitch) < 3).astype(np.float32)
        shade -= 0.35 * joints
    return base[None, None, :] * shade[..., None]


def _cloth(width: int, height: int, rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.randint(20, 230) for _ in range(3)], dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(3, 9)
    weave = 0.5 + 0.25 * (np.sin(xs * 2 * math.pi / period) + np.sin(ys * 2 * math.pi / period))
    folds = _smooth_noise(width, height, rng.randint(2, 5), nprng)
    shade = 0.85 + 0.1 * weave + 0.25 * (folds - 0.5)
    return base[None, None, :] * shade[..., None]


def _stone(width: int, height: int, rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.randint(60, 220)] * 3, dtype=np.float32) + np.array([rng.randint(-15, 15) for _ in range(3)])
    speckle = nprng.random((height, width)).astype(np.float32)
    shade = 0.9 + 0.25 * (_smooth_noise(width, height, rng.randint(10, 40), nprng) - 0.5)
    shade -= 0.4 * (speckle > rng.uniform(0.97, 0.995))
    shade += 0.2 * (speckle < 0.01)
    return base[None, None, :] * shade[..., None]


def _plain(width: int, height: int, rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.randint(15, 240) for _ in range(3)], dtype=np.float32)
    shade = 0.9 + 0.2 * _smooth_noise(width, height, rng.randint(2, 6), nprng)
    return base[None, None, :] * shade[..., None]


def make_table(width: int, height: int, rng: random.Random) -> Image.Image:
    """A surface to lay a page on, with a few objects (pens, a phone, a mug) that have edges but no text."""
    nprng = np.random.default_rng(rng.getrandbits(32))
    surface = rng.choices([_wood, _cloth, _stone, _plain], weights=[4, 2, 2, 1])[0](width, height, rng, nprng)
    surface += nprng.normal(0, rng.uniform(1, 6), surface.shape)
    table = Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(table)
    for _ in range(rng.randint(0, 4)):
        color = tuple(rng.randint(0, 255) for _ in range(3))
        cx, cy = rng.randint(0, width), rng.randint(0, height)
        kind = rng.random()
        if kind < 0.5:  # a pen or pencil: a long thin rotated bar
            length, thick, angle = rng.randint(150, 600), rng.randint(8, 25), rng.uniform(0, math.pi)
            dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=color, width=thick)
        elif kind < 0.8:  # a mug or a coin seen from above
            radius = rng.randint(30, 160)
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color, outline=(0, 0, 0))
        else:  # a phone or a book
            w, h = rng.randint(120, 500), rng.randint(200, 700)
            draw.rounded_rectangle([cx, cy, cx + w, cy + h], radius=rng.randint(0, 30), fill=color)
    return table


def _homography(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> np.ndarray:
    """The 3x3 matrix that maps the four source points onto the four target points."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(values, dtype=np.float64))
    return np.append(solution, 1.0).reshape(3, 3)


def _apply(matrix: np.ndarray, x: float, y: float) -> tuple[float, float]:
    u, v, w = matrix @ np.array([x, y, 1.0])
    return u / w, v / w


def photograph(page: PageSample, rng: random.Random) -> PageSample:
    """The page as a phone photo: on a table, in perspective, with light, shadow, blur, noise and JPEG."""
    width, height = rng.choice(PHOTO_SIZES)
    table = make_table(width, height, rng)
    page_w, page_h = page.image.size
    # where the page's corners land: most of the frame, turned a little, each corner pulled by perspective
    fill = rng.uniform(0.6, 0.95)
    scale = fill * min(width / page_w, height / page_h)
    angle = math.radians(rng.uniform(-8, 8))
    cx = width / 2 + rng.uniform(-0.5, 0.5) * (width - page_w * scale) * 0.8
    cy = height / 2 + rng.uniform(-0.5, 0.5) * (height - page_h * scale) * 0.8
    corners = [(0, 0), (page_w, 0), (page_w, page_h), (0, page_h)]
    jitter = 0.06 * scale * max(page_w, page_h)
    targets = []
    for x, y in corners:
        dx, dy = (x - page_w / 2) * scale, (y - page_h / 2) * scale
        targets.append(
            (
                cx + dx * math.cos(angle) - dy * math.sin(angle) + rng.uniform(-jitter, jitter),
                cy + dx * math.sin(angle) + dy * math.cos(angle) + rng.uniform(-jitter, jitter),
            )
        )
    forward = _homography(corners, targets)
    inverse = np.linalg.inv(forward)
    coefficients = tuple((inverse / inverse[2, 2]).flatten()[:8])
    warped = page.image.convert("RGB").transform((width, height), Image.PERSPECTIVE, coefficients, Image.BILINEAR)
    mask = Image.new("L", page.image.size, 255).transform(
        (width, height), Image.PERSPECTIVE, coefficients, Image.BILINEAR, fillcolor=0
    )
    # the page's shadow on the table, then the page
    offset = (rng.randint(-12, 12), rng.randint(0, 18))
    shadow = Image.new("L", (width, height), 0)
    shadow.paste(mask.filter(ImageFilter.GaussianBlur(rng.uniform(4, 20))), offset)
    table = Image.composite(Image.new("RGB", (width, height), (0, 0, 0)), table, shadow.point(lambda v: int(v * 0.45)))
    photo = Image.composite(warped, table, mask)
    array = np.asarray(photo).astype(np.float32)
    # light: a gradient across the frame, a cast, and sometimes the phone's or a hand's soft shadow
    nprng = np.random.default_rng(rng.getrandbits(32))
    light = 0.75 + 0.45 * _smooth_noise(width, height, rng.randint(1, 3), nprng)
    if rng.random() < 0.5:
        blob = Image.new("L", (width, height), 0)
        bx, by = rng.randint(0, width), rng.randint(0, height)
        radius = rng.randint(width // 6, width // 2)
        ImageDraw.Draw(blob).ellipse([bx - radius, by - radius * 1.5, bx + radius, by + radius * 1.5], fill=255)
        blob = blob.filter(ImageFilter.GaussianBlur(rng.uniform(30, 90)))
        light *= 1.0 - rng.uniform(0.2, 0.5) * np.asarray(blob, dtype=np.float32) / 255.0
    cast = np.array([rng.uniform(0.9, 1.08), 1.0, rng.uniform(0.85, 1.05)], dtype=np.float32)
    array = array * light[..., None] * cast
    array += nprng.normal(0, rng.uniform(2, 8), array.shape)
    photo = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.6)))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=rng.randint(45, 92))
    photo = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    words = []
    for word in page.words:
        left, top, right, bottom = word.box
        points = [_apply(forward, x, y) for x, y in ((left, top), (right, top), (right, bottom), (left, bottom))]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        words.append(WordBox(word.text, (max(0, min(xs)), max(0, min(ys)), min(width, max(xs)), min(height, max(ys)))))
    return PageSample(photo, words, page.lines)


def render_photo(sampler, fonts, rng: random.Random) -> PageSample:
    """A page in one hand (sometimes a small sheet with few lines, so its writing is large in the frame),
    photographed on a table."""
    page_w = rng.randint(600, 1000)
    page_h = int(page_w * rng.uniform(1.25, 1.45))
    page = render_page(sampler, fonts, rng, width=page_w, height=page_h, effects=False)
    return photograph(page, rng)
