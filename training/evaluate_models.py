"""The figures of the model cards, measured on data the models never trained on.

    python -m training.evaluate_models [--data data/synth] [--real-dev ../shared/data/real-dev]

Detector: mAP50 and mAP50-95 (ultralytics validation) on pages rendered with the held-out font
families. Recognizer: CER, WER and word accuracy on every held-out-font word crop, and on the real
handwriting samples (a word and a line, read through detector + recognizer like a page).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR, REPO_ROOT
from training.metrics import error_rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "synth")
    parser.add_argument("--real-dev", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "real-dev")
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR_WEIGHTS)
    parser.add_argument("--recognizer", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N crops (quick checks)")
    args = parser.parse_args(argv)
    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import Recognizer
    from training.inprocess import read_page
    from training.train_detector import evaluate as evaluate_detector
    from training.train_recognizer import evaluate as evaluate_recognizer
    from training.train_recognizer import read_split

    figures: dict = {}
    figures["detector"] = evaluate_detector(args.detector, args.data / "detector" / "data.yaml", args.imgsz)
    crops = read_split(args.data / "recognizer" / "val", args.limit or None)
    figures["recognizer_held_out_fonts"] = evaluate_recognizer(args.recognizer, crops)
    lexicon = find_lexicon(args.recognizer)
    if lexicon is not None:  # what the service reads by default; the line above is the bare model
        figures["recognizer_held_out_fonts_lexicon"] = evaluate_recognizer(args.recognizer, crops, lexicon=lexicon)

    if (args.real_dev / "word.png").exists():
        detector = Detector(args.detector, image_size=args.imgsz)
        recognizer = Recognizer(args.recognizer, lexicon=lexicon)
        samples = {"word.png": "word", "line.png": "or work on line level"}
        real = {}
        for name, truth in samples.items():
            image = Image.open(args.real_dev / name).convert("RGB")
            started = time.perf_counter()
            as_page = " ".join(read_page(detector, recognizer, image))
            seconds = time.perf_counter() - started
            as_crop = recognizer.predict([image.convert("L")])[0].text
            real[name] = {
                "truth": truth,
                "pipeline": as_page,
                "crop": as_crop,
                "seconds": round(seconds, 3),
                "pipeline_cer": error_rates([truth], [as_page])[0],
                "crop_cer": error_rates([truth], [as_crop])[0],
            }
        references = list(samples.values())
        figures["real_dev"] = {
            "samples": real,
            "pipeline_cer": error_rates(references, [real[n]["pipeline"] for n in samples])[0],
            "crop_cer": error_rates(references, [real[n]["crop"] for n in samples])[0],
        }
    print(json.dumps(figures, indent=1, default=float))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
