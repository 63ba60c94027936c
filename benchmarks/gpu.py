"""The models on a GPU, in-process: what the recognizer reads and how fast in float32, float16 and bfloat16, a page
at a time and pages batched together (as the recognizer batches concurrent requests' crops), beside the CPU's
float32 readings; the detector on the GPU where ultralytics is installed. Prints a table, writes the figures as
JSON; asserts nothing.

    .venv/bin/python benchmarks/gpu.py [--device cuda] [--repeats 10] [--out runs/gpu/gpu.json]
    scripts/gpu_run.sh     # the prepared run for a lent GPU machine (benchmarks/README.md, "Measured on a GPU")

It needs torch, transformers, tokenizers, rapidfuzz, pillow and numpy (no gRPC, Envoy or ONNX Runtime: the
machines lent with a GPU have torch but not the service's other packages). The crops are the sample page's
labelled word boxes, so the detector is not needed for the recognizer's figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.timing import timed  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "samples" / "page.png")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pages", type=int, nargs="+", default=[1, 4, 16], help="pages read in one call")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128], help="the decoder's batch sizes")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "gpu" / "gpu.json")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import Recognizer

    cuda = args.device.startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    figures: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "recognizer": [],
        "pages": [],
    }
    truth = json.loads(args.image.with_suffix(".json").read_text())
    gray = Image.open(args.image).convert("L")
    crops = [cut_crop(gray, tuple(word["box"])) for word in truth["words"]]
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    # the CPU's float32 readings (the torch backend reads as the services' ONNX Runtime one: tested)
    expected = [r.text for r in Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, backend="torch").predict(crops)]
    right = sum(text == word["text"] for text, word in zip(expected, truth["words"], strict=True))
    print(f"{figures['device']}, torch {torch.__version__}; the sample page's {len(crops)} word crops", flush=True)
    print(f"CPU float32 reads {right} of {len(crops)} words right", flush=True)
    # float16 on a CPU is emulated (minutes): GPUs only
    dtypes = ("float32", "float16", "bfloat16") if cuda else ("float32", "bfloat16")
    for dtype in dtypes:
        recognizer = Recognizer(
            DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, device=args.device, dtype=dtype, backend="torch"
        )
        texts = [r.text for r in recognizer.predict(crops)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = statistics.median(timed(lambda r=recognizer: r.predict(crops), args.repeats, synchronize))
        row = {
            "dtype": dtype,
            "ms_per_page": 1000 * seconds,
            "same_as_cpu": sum(a == b for a, b in zip(texts, expected, strict=True)),
            "right": sum(text == word["text"] for text, word in zip(texts, truth["words"], strict=True)),
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        }
        figures["recognizer"].append(row)
        print(json.dumps(row), flush=True)
        for batch_size in args.batch_sizes:  # pages batched across requests: one call, the decoder's batch size
            recognizer.batch_size = batch_size
            for pages in args.pages:
                many = crops * pages
                seconds = statistics.median(
                    timed(lambda r=recognizer, m=many: r.predict(m), max(1, args.repeats // pages), synchronize)
                )
                batched = {
                    "dtype": dtype,
                    "batch_size": batch_size,
                    "pages": pages,
                    "ms_per_call": 1000 * seconds,
                    "pages_per_min": 60 * pages / seconds,
                }
                figures["pages"].append(batched)
                print(json.dumps(batched), flush=True)
    if importlib.util.find_spec("ultralytics") is not None:
        from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
        from services.detector.model import Detector

        page = Image.open(args.image).convert("RGB")
        detector = Detector(DEFAULT_DETECTOR_WEIGHTS, device=args.device)
        boxes = len(detector.predict(page))
        seconds = statistics.median(timed(lambda: detector.predict(page), args.repeats, synchronize))
        figures["detector"] = {"ms_per_page": 1000 * seconds, "boxes": boxes}
        print(json.dumps({"detector": figures["detector"]}), flush=True)
    else:
        print("detector: ultralytics is not installed here (README, 'On a GPU': its wheels)", flush=True)

    print("\n| dtype | ms a page | words as the CPU reads them | words right |")
    print("|---|---:|---:|---:|")
    for row in figures["recognizer"]:
        print(f"| {row['dtype']} | {row['ms_per_page']:.0f} | {row['same_as_cpu']} of {len(crops)} | {row['right']} |")
    print("\n| dtype | decoder batch | pages a call | ms a call | pages/min |")
    print("|---|---:|---:|---:|---:|")
    for row in figures["pages"]:
        print(
            f"| {row['dtype']} | {row['batch_size']} | {row['pages']} | {row['ms_per_call']:.0f} "
            f"| {row['pages_per_min']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
