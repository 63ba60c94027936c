"""A copy of a recognizer whose PP-OCR encoder reads crops at another height: the cheaper-input lever.

    python -m training.encoder_height --model-dir models/recognizer --height 32 --out runs/recognizer-h32

The encoder's work grows with the square of the height it reads crops at (the width follows the aspect), so 32 px
costs some 0.44 of 48 px. Its convolutions take any height; the neck's average pool, which brings the backbone's
last feature map to one row, is set to that map's height. The weights are unchanged: the copy reads worse until it is
trained at its height (`train_recognizer --init-from` it, the encoder learning; models/recognizer/README.md has what
each height read before and after).
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


def write(model_dir: Path, height: int, out: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    encoder = config["encoder"]
    if encoder.get("model_type") != ppocr_pixels.MODEL_TYPE:
        raise ValueError(f"{model_dir}: only PP-OCR encoders take another input height")
    if height < 16 or height % 8:
        raise ValueError("the height must be a multiple of 8, at least 16")
    if out.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("onnx"))
    encoder["image_height"] = height
    encoder["neck_pool"] = [backbone_height(height, encoder["blocks"]), encoder["neck_pool"][1]]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/recognizer"))
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write(args.model_dir, args.height, args.out)
    print(f"{args.out}: encoder reads crops {args.height} px tall")


if __name__ == "__main__":
    main()
