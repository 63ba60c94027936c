"""Choose the recognizer's decoding weights on development crops (never the test set): a table of CER and
WER for each CTC weight and lexicon weight.

    python -m training.tune_decoding --model runs/recognizer-ppocr \\
        --crops data/synth-s17/recognizer-lines/val data/synth-s17/recognizer/val --limit 300 \\
        --ctc-weights 0 0.3 0.5 0.7 1 --lexicon-weights 0 1.5

A CTC weight of 0 is the decoder alone (its n best readings still chosen among when a lexicon is on);
a lexicon weight of 0 is no lexicon.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from PIL import Image

from services.recognizer.lexicon import find_lexicon
from services.recognizer.model import Recognizer
from training.metrics import error_rates
from training.train_recognizer import read_split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--crops", type=Path, nargs="+", required=True, help="folders with labels.tsv")
    parser.add_argument("--limit", type=int, default=300, help="crops drawn from each folder (seed 0)")
    parser.add_argument("--ctc-weights", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--lexicon-weights", type=float, nargs="+", default=[0.0, 1.5])
    parser.add_argument(
        "--lexicon", default="auto", help="the lexicon file (auto: the model's, else models/recognizer's)"
    )
    args = parser.parse_args(argv)
    rng = random.Random(0)
    sets = {}
    for folder in args.crops:
        rows = read_split(folder)
        rng.shuffle(rows)
        sets[str(folder)] = [(Image.open(path).convert("L"), text) for path, text in rows[: args.limit]]
    lexicon_source = args.model if (args.model / "lexicon.tsv").exists() else Path("models/recognizer")
    print("| ctc weight | lexicon weight | " + " | ".join(f"{name} CER / WER" for name in sets) + " | ms/crop |")
    print("|---|---|" + "---|" * len(sets) + "---|")
    for ctc_weight in args.ctc_weights:
        for lexicon_weight in args.lexicon_weights:
            lexicon = find_lexicon(lexicon_source, args.lexicon, lexicon_weight) if lexicon_weight else None
            recognizer = Recognizer(args.model, lexicon=lexicon, ctc_weight=ctc_weight)
            cells, seconds, count = [], 0.0, 0
            for rows in sets.values():
                started = time.perf_counter()
                readings = recognizer.predict([image for image, _ in rows])
                seconds += time.perf_counter() - started
                count += len(rows)
                cer, wer = error_rates([text for _, text in rows], [r.text for r in readings])
                cells.append(f"{cer:.4f} / {wer:.4f}")
            print(f"| {ctc_weight} | {lexicon_weight} | " + " | ".join(cells) + f" | {1000 * seconds / count:.1f} |")


if __name__ == "__main__":
    main()
