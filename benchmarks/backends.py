"""Each model alone on ONNX Runtime and on torch, called from the main thread and from a worker thread (the
services run their models in a worker thread, `services/common/model_runner.py`). Prints measured figures;
asserts nothing. Each backend runs in a process of its own (ultralytics and torch keep per-process state).

    .venv/bin/python benchmarks/backends.py [--image samples/page.png] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def measure(model: str, backend: str, image: Path, repeats: int) -> dict:
    """Median ms of one call, from the main thread and from a worker thread, in this process."""
    import torch
    from PIL import Image

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR

    page = Image.open(image).convert("RGB")
    if model == "detector":
        from services.detector.model import Detector

        detector = Detector(DEFAULT_DETECTOR_WEIGHTS, backend=backend)

        def call():
            return detector.predict(page)
    else:
        from services.common.crops import cut_crop
        from services.detector.model import Detector
        from services.recognizer.lexicon import find_lexicon
        from services.recognizer.model import Recognizer

        boxes = [d.box for d in Detector(DEFAULT_DETECTOR_WEIGHTS).predict(page) if d.class_id == 0]
        gray = page.convert("L")
        crops = [cut_crop(gray, box) for box in boxes]
        recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), backend=backend)

        def call():
            return recognizer.predict(crops)

    worker = ThreadPoolExecutor(1)
    figures = {"threads": torch.get_num_threads()}
    for where, run in (("main thread", call), ("worker thread", lambda: worker.submit(call).result())):
        run()
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
        figures[where] = 1000 * statistics.median(seconds)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "samples" / "page.png")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.image, args.repeats)))
        return
    print(f"{args.image.name}, median of {args.repeats} calls after a warm-up, one process per row, this machine")
    print("| model | backend | torch threads | main thread ms | worker thread ms |\n|---|---|---:|---:|---:|")
    for model in ("detector", "recognizer"):
        for backend in ("onnx", "torch"):
            command = [sys.executable, __file__, "--image", str(args.image), "--repeats", str(args.repeats)]
            output = subprocess.run([*command, "--one", model, backend], capture_output=True, text=True, check=True)
            figures = json.loads(output.stdout.strip().splitlines()[-1])
            print(
                f"| {model} | {backend} | {figures['threads']} | {figures['main thread']:.0f} "
                f"| {figures['worker thread']:.0f} |"
            )


if __name__ == "__main__":
    main()
