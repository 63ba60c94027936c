"""A copy of a recognizer whose PP-OCR encoder reads crops at another height, or another width against their
aspect: the cheaper-input levers.

    python -m training.encoder_input --model-dir models/recognizer --height 32 --out runs/recognizer-h32
    python -m training.encoder_input --model-dir models/recognizer --width-scale 0.9 --out models/recognizer

The encoder's work grows with the square of the height it reads crops at (the width follows the aspect), so 32 px
costs some 0.44 of 48 px. Its convolutions take any height; the neck's average pool, which brings the backbone's
last feature map to one row, is set to that map's height. The weights are unchanged: the copy reads worse until it is
trained at its height (`train_recognizer --init-from` it, the encoder learning; models/recognizer/README.md has what
each height read before and after). The width scale (`ppocr_pixels.prepare_pixels`) needs no training to be tried:
the shipped model reads at 0.9 (the card's "Crops read at 0.9 of their width").
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from services.recognizer import ppocr_pixels


def backbone_height(height: int, blocks: list) -> int:
    """The height of the PP-OCR backbone's last feature map for crops `height` px tall: the stem's two stride-2
    convs, then each block whose stride along the height is 2 (`blocks`: the config's [channels, stride, se]; 3x3
    convs with padding 1, so each halving rounds up)."""
    for _ in range(2 + sum(1 for _, stride, _ in blocks if stride == 2)):
        height = (height + 1) // 2
    return height


def write(model_dir: Path, out: Path, height: int | None = None, width_scale: float | None = None) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    encoder = config["encoder"]
    if encoder.get("model_type") != ppocr_pixels.MODEL_TYPE:
        raise ValueError(f"{model_dir}: only PP-OCR encoders take another input height or width")
    if height is not None and (height < 16 or height % 8):
        raise ValueError("the height must be a multiple of 8, at least 16")
    if width_scale is not None and not 0.25 <= width_scale <= 4:
        raise ValueError("the width scale must be between 0.25 and 4")
    if out.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("onnx"))
    if height is not None:
        encoder["image_height"] = height
        encoder["neck_pool"] = [backbone_height(height, encoder["blocks"]), encoder["neck_pool"][1]]
    if width_scale is not None:
        encoder["width_scale"] = width_scale
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/recognizer"))
    parser.add_argument("--height", type=int, help="px (a multiple of 8); default: the model's")
    parser.add_argument("--width-scale", type=float, help="how wide against their aspect; default: the model's")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.height is None and args.width_scale is None:
        parser.error("give --height, --width-scale or both")
    write(args.model_dir, args.out, args.height, args.width_scale)
    encoder = json.loads((args.out / "config.json").read_text())["encoder"]
    height, scale = encoder["image_height"], encoder.get("width_scale", 1.0)
    print(f"{args.out}: the encoder reads crops {height} px tall at {scale} of their width")


if __name__ == "__main__":
    main()
