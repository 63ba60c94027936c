"""Render the sample page shipped in samples/: a held-out font, held-out text, ground truth beside it.

python -m training.make_sample --out samples
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from training.synth.fonts import EVAL_FAMILIES, ensure_fonts
from training.synth.render import render_page
from training.synth.text import TextSampler, evaluation_vocabulary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--family", default="reenie-beanie", choices=EVAL_FAMILIES)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    fonts = ensure_fonts([args.family])
    page = render_page(TextSampler(evaluation_vocabulary(), rng), fonts, rng, width=1000, height=480)
    args.out.mkdir(parents=True, exist_ok=True)
    page.image.save(args.out / "page.png")
    lines = [" ".join(page.words[i].text for i in line) for line in page.lines]
    (args.out / "page.txt").write_text("\n".join(lines) + "\n")
    truth = {
        "font": args.family,
        "seed": args.seed,
        "lines": lines,
        "words": [{"text": w.text, "box": [round(v, 1) for v in w.box]} for w in page.words],
    }
    (args.out / "page.json").write_text(json.dumps(truth, indent=1))
    print(f"{args.out / 'page.png'}: {len(page.words)} words, {len(lines)} lines")


if __name__ == "__main__":
    main()
