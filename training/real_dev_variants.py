"""Real-dev read as it is and under eleven small changes of its images: a steadier real-ink figure than nine samples.

    python -m training.real_dev_variants [--real-dev ../shared/data/real-dev] [--dtype float32]
        [--decoder-dtype float32] [--variants ...]

The nine real samples are too few to tell changes of a letter apart: saving them again as JPEG at quality 95
alone moves float32's CER by a letter (models/recognizer/README.md). Each sample is read as a page through the
service's pipeline (`training.inprocess.read_page`, as `evaluate_models.evaluate_real` does) as it is and after
each change a photo or scan of it could have had: another size, gray, a degree of turn, JPEG, a margin (twelve by
default; `jpeg-95`, `white-1` and `white-4` by name). Prints each variant's CER / WER, the samples it misread, and
the mean CER over the variants; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR, REPO_ROOT


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _scaled(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)


def _turned(degrees: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.rotate(degrees, resample=Image.BICUBIC, expand=True, fillcolor=image.getpixel((0, 0)))


def _paper_margin(pixels: int) -> Callable[[Image.Image], Image.Image]:
    """A margin of the image's own edge colours (the paper around the ink, not white)."""
    return lambda image: Image.fromarray(np.pad(np.asarray(image), ((pixels,) * 2, (pixels,) * 2, (0, 0)), "edge"))


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as-is": lambda image: image,
    "scale-0.5": _scaled(0.5),
    "scale-0.75": _scaled(0.75),
    "scale-1.5": _scaled(1.5),
    "scale-2": _scaled(2.0),
    "gray": lambda image: image.convert("L").convert("RGB"),
    "turn+1": _turned(1),
    "turn-1": _turned(-1),
    "jpeg-75": lambda image: _jpeg(image, 75),
    "white-16": lambda image: ImageOps.expand(image, 16, fill="white"),
    "paper-16": _paper_margin(16),
    "paper-64": _paper_margin(64),
}
# the mean the recognizer card reports is over these; the others are asked for by name
DEFAULT_VARIANTS = list(VARIANTS)
VARIANTS.update(
    {
        "jpeg-95": lambda image: _jpeg(image, 95),
        "white-1": lambda image: ImageOps.expand(image, 1, fill="white"),
        "white-4": lambda image: ImageOps.expand(image, 4, fill="white"),
    }
)


def read_variants(detector, recognizer, folder: Path, names: list[str]) -> dict[str, dict]:
    """Each variant's CER, WER and misread samples (their readings), the samples read as pages as the service
    reads them (word crops, `evaluate_models.evaluate_real`)."""
    from training.evaluate_models import evaluate_real

    results = {}
    for variant in names:
        read = evaluate_real(detector, recognizer, folder, "word", VARIANTS[variant])
        misread = {name: s["pipeline"] for name, s in read["samples"].items() if s["pipeline"] != s["truth"]}
        results[variant] = {"cer": read["pipeline_cer"], "wer": read["pipeline_wer"], "misread": misread}
    return results


def main(argv: list[str] | None = None) -> None:
    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import DTYPE_NAMES, Recognizer
    from training.evaluate_models import add_decoder_dtype

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-dev", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "real-dev")
    parser.add_argument("--model", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR_WEIGHTS)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="the recognizer's (HW_DTYPE)")
    add_decoder_dtype(parser)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    args = parser.parse_args(argv)
    detector = Detector(args.detector)
    recognizer = Recognizer(
        args.model, lexicon=find_lexicon(args.model), dtype=args.dtype, decoder_dtype=args.decoder_dtype
    )
    results = read_variants(detector, recognizer, args.real_dev, args.variants)
    print("| variant | CER | WER | misread (sample: reading) |\n|---|---:|---:|---|")
    for variant, result in results.items():
        misread = "; ".join(f"{name}: {reading!r}" for name, reading in result["misread"].items())
        print(f"| {variant} | {result['cer']:.4f} | {result['wer']:.3f} | {misread} |")
    print(f"| mean of {len(results)} | {statistics.mean(r['cer'] for r in results.values()):.4f} | | |")


if __name__ == "__main__":
    main()
