"""Page CER of pipeline and decoding settings, in this process, on development pages and on real-dev: the
choices of the recognizer's model card were made with it (on held-out-font pages that are not the test set).

    python -m training.compare_pipelines --model models/recognizer --pages data/synth-s17/pages/val \\
        word:0.5:1:1:0.25 line:0.5:1:1:0.25 word:0.5:1:1:0.25:0

Each setting is unit:ctc_weight:lexicon_weight:n_best:detector_min_score[:missed_word_gap[:deslant_below]]. A
lexicon weight of 0 turns the lexicon off; a missed-word gap of 0 turns off reading the ink in a line's wide gaps
(default: the service's, 0.8 x the word height); a deslant threshold of 0 turns off the second, upright reading
of unsure slanted crops (default: the recognizer's, 0.6).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR, REPO_ROOT
from services.detector.model import EXTEND_SCORE, Detector
from services.orchestrator.ink import GAP_RATIO
from services.recognizer.lexicon import find_lexicon
from services.recognizer.model import DESLANT_BELOW, DTYPE_NAMES, Recognizer
from training.evaluate_models import add_decoder_dtype, evaluate_real
from training.inprocess import default_options, read_page
from training.metrics import error_rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR_WEIGHTS)
    parser.add_argument(
        "--extend-score", type=float, default=EXTEND_SCORE, help="weaker boxes that may grow a word box (0: none)"
    )
    parser.add_argument("--pages", type=Path, required=True, help="pages with ground truth (*.png + *.json)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="the recognizer's (HW_DTYPE)")
    add_decoder_dtype(parser)
    parser.add_argument("--real-dev", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "real-dev")
    parser.add_argument(
        "settings",
        nargs="+",
        help="unit:ctc_weight:lexicon_weight:n_best:detector_min_score[:missed_word_gap[:deslant_below]]",
    )
    args = parser.parse_args(argv)
    pages = [(path.with_suffix(".png"), json.loads(path.read_text())) for path in sorted(args.pages.glob("*.json"))]
    print(
        "| unit | CTC weight | lexicon weight | n best | detector min score | missed-word gap | deslant below "
        "| page CER | page WER | s/page | real-dev CER |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for setting in args.settings:
        unit, ctc_weight, lexicon, n_best, min_score, *rest = setting.split(":")
        gap = float(rest[0]) if rest else GAP_RATIO
        deslant_below = float(rest[1]) if len(rest) > 1 else DESLANT_BELOW
        options = default_options(unit=unit, missed_words=gap > 0, missed_word_gap=gap or GAP_RATIO)
        detector = Detector(args.detector, min_score=float(min_score), extend_score=args.extend_score)
        recognizer = Recognizer(
            args.model,
            ctc_weight=float(ctc_weight),
            lexicon=find_lexicon(args.model, "auto" if float(lexicon) > 0 else "off", float(lexicon)),
            n_best=int(n_best),
            deslant_below=deslant_below,
            dtype=args.dtype,
            decoder_dtype=args.decoder_dtype,
        )
        references, readings, started = [], [], time.perf_counter()
        for image, truth in pages:
            references.append(" ".join(" ".join(truth["lines"]).split()))
            lines = read_page(detector, recognizer, Image.open(image).convert("RGB"), options)
            readings.append(" ".join(" ".join(lines).split()))
        seconds = (time.perf_counter() - started) / max(1, len(pages))
        cer, wer = error_rates(references, readings)
        real = evaluate_real(detector, recognizer, args.real_dev, options)["pipeline_cer"]
        figures = [f"{cer:.4f}", f"{wer:.4f}", f"{seconds:.2f}", f"{real:.4f}"]
        cells = [unit, ctc_weight, lexicon, n_best, min_score, str(gap), str(deslant_below), *figures]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
