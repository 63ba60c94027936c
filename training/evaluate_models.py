"""The figures of the model cards, measured on data the models never trained on.

    python -m training.evaluate_models [--data data/synth] [--real-dev ../shared/data/real-dev] [--unit line]

Detector: mAP50 and mAP50-95 (ultralytics validation) on pages rendered with the held-out font
families. Recognizer: CER, WER and word accuracy on every held-out-font word (and line) crop, greedy
and as the service decodes by default; and the real handwriting samples of real-dev, each read as a
page through the service's pipeline (detector, lines, crops, recognizer), CER over all of them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from services.common.settings import (
    DEFAULT_DETECTOR_WEIGHTS,
    DEFAULT_RECOGNIZER_DIR,
    REPO_ROOT,
    OrchestratorSettings,
    RecognizerSettings,
)
from services.recognizer.onnx_decoder import DECODER_DTYPES
from training.metrics import error_rates


def add_decoder_dtype(parser: argparse.ArgumentParser) -> None:
    """--decoder-dtype, as the evaluation scripts take it (float32 by default, as their --dtype)."""
    parser.add_argument(
        "--decoder-dtype",
        choices=DECODER_DTYPES,
        default="float32",
        help="the recognizer's decoder where ONNX Runtime runs it (HW_DECODER_DTYPE; the service's default: int8)",
    )


def evaluate_real(detector, recognizer, folder: Path, unit, change=None) -> dict:
    """Each real sample read as a page through the service's pipeline (`unit`: "word", "line", or the whole
    PipelineOptions); CER over all of them (summed edits over summed reference characters), and each sample's
    reading. `change`: applied to each image first (`training.real_dev_variants`)."""
    from training.inprocess import default_options, read_page

    options = default_options(unit=unit) if isinstance(unit, str) else unit

    rows = [line.split("\t", 1) for line in (folder / "labels.tsv").read_text().splitlines() if "\t" in line]
    samples, seconds = {}, 0.0
    for name, truth in rows:
        image = Image.open(folder / name).convert("RGB")
        image = change(image) if change is not None else image
        started = time.perf_counter()
        reading = " ".join(read_page(detector, recognizer, image, options))
        seconds += time.perf_counter() - started
        samples[name] = {"truth": truth, "pipeline": reading, "cer": error_rates([truth], [reading])[0]}
    cer, wer = error_rates([t for _, t in rows], [samples[n]["pipeline"] for n, _ in rows])
    return {
        "pipeline_cer": cer,
        "pipeline_wer": wer,
        "seconds_per_sample": seconds / max(1, len(rows)),
        "unit": options.unit,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "synth")
    parser.add_argument("--real-dev", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "real-dev")
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR_WEIGHTS)
    parser.add_argument("--recognizer", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N crops (quick checks)")
    parser.add_argument(
        "--unit",
        choices=("word", "line"),
        default=OrchestratorSettings.recognition_unit,
        help="what the recognizer reads in the pipeline (the orchestrator's default)",
    )
    parser.add_argument(
        "--n-best",
        type=int,
        default=RecognizerSettings.lexicon_n_best,
        help="readings the decoder proposes (the service's HW_LEXICON_N_BEST; 5 was the round-7 model's)",
    )
    parser.add_argument("--backend", choices=("onnx", "torch"), default=RecognizerSettings.backend)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the recognizer and the real-dev detector)")
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="where torch runs the model"
    )
    add_decoder_dtype(parser)
    parser.add_argument(
        "--deslant-below",
        type=float,
        default=RecognizerSettings.deslant_below,
        help="the service's HW_DESLANT_BELOW: unsure slanted crops read a second time upright (0: never)",
    )
    parser.add_argument(
        "--encoder-onnx",
        type=Path,
        help="an encoder graph to run instead of the weights' own (the service's HW_ENCODER_ONNX; "
        "training.quantize_encoder makes an int8 one)",
    )
    parser.add_argument(
        "--crops",
        nargs="+",
        default=["recognizer"],
        help="crop sets under DATA to score the recognizer on (recognizer, recognizer-lines)",
    )
    args = parser.parse_args(argv)
    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import Recognizer
    from training.train_detector import evaluate as evaluate_detector
    from training.train_recognizer import evaluate as evaluate_recognizer
    from training.train_recognizer import read_split

    options = dict(
        backend=args.backend,
        encoder_onnx=args.encoder_onnx,
        device=args.device,
        dtype=args.dtype,
        decoder_dtype=args.decoder_dtype,
    )
    figures: dict = {}
    data_yaml = args.data / "detector" / "data.yaml"
    figures["detector"] = evaluate_detector(args.detector, data_yaml, args.imgsz, args.device)
    lexicon = find_lexicon(args.recognizer)
    for crop_set in args.crops:  # "recognizer": word crops; "recognizer-lines": line crops
        crops = read_split(args.data / crop_set / "val", args.limit or None)
        name = "recognizer_held_out_fonts" + ("" if crop_set == "recognizer" else "_" + crop_set.split("-")[-1])
        figures[name] = evaluate_recognizer(args.recognizer, crops, greedy=True, **options)
        if lexicon is not None:  # what the service reads by default; the line above is the bare model
            figures[name + "_lexicon"] = evaluate_recognizer(
                args.recognizer, crops, lexicon=lexicon, n_best=args.n_best, deslant_below=args.deslant_below, **options
            )

    if (args.real_dev / "labels.tsv").exists():
        detector = Detector(args.detector, image_size=args.imgsz, device=args.device)
        recognizer = Recognizer(
            args.recognizer, lexicon=lexicon, n_best=args.n_best, deslant_below=args.deslant_below, **options
        )
        figures["real_dev"] = evaluate_real(detector, recognizer, args.real_dev, args.unit)
    print(json.dumps(figures, indent=1, default=float))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
