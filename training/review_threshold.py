"""How well a confidence threshold picks the words to review (HW_REVIEW_BELOW): for each threshold, the share of
words flagged, how many of those are wrong, and how many of all wrong words are flagged, as the service reads.

    python -m training.review_threshold --crops data/synth/recognizer/val --limit 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from services.common.settings import DEFAULT_RECOGNIZER_DIR
from services.recognizer.lexicon import find_lexicon
from services.recognizer.model import Recognizer
from training.train_recognizer import read_split


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, required=True, help="a crops folder with labels.tsv")
    parser.add_argument("--model", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    args = parser.parse_args(argv)
    rows = read_split(args.crops, args.limit)
    recognizer = Recognizer(args.model, lexicon=find_lexicon(args.model))
    readings = recognizer.predict([Image.open(path).convert("L") for path, _ in rows])
    scored = [(r.confidence, r.text == truth) for r, (_, truth) in zip(readings, rows, strict=True)]
    wrong = sum(not right for _, right in scored)
    print(f"{len(scored)} crops, {wrong} read wrong")
    print("| threshold | words flagged | of those, wrong | wrong words flagged |")
    print("| --- | --- | --- | --- |")
    table = []
    for threshold in args.thresholds:
        flagged = [right for confidence, right in scored if confidence < threshold]
        flagged_wrong = sum(not right for right in flagged)
        row = {
            "threshold": threshold,
            "flagged": len(flagged) / max(1, len(scored)),
            "precision": flagged_wrong / max(1, len(flagged)),
            "recall": flagged_wrong / max(1, wrong),
        }
        table.append(row)
        print(f"| {threshold} | {row['flagged']:.1%} | {row['precision']:.1%} | {row['recall']:.1%} |")
    return table


if __name__ == "__main__":
    main()
