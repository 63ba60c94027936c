"""Latency of one page, side by side: the models in-process, gRPC to the orchestrator, and through
Envoy (gRPC and REST). Prints measured figures; asserts nothing.

    .venv/bin/python benchmarks/latency.py [--image samples/page.png] [--repeats 10]
    HW_BACKEND=torch .venv/bin/python benchmarks/latency.py   # both models in torch
    HW_DEVICE=cuda HW_DTYPE=float16 .venv/bin/python benchmarks/latency.py   # on a GPU (torch), half precision
    HW_DTYPE=bfloat16 .venv/bin/python benchmarks/latency.py   # on a CPU: the encoder on OpenVINO in bfloat16

Starts its own stack (shipped models, free ports, Envoy in front); with --envoy HOST:PORT (and --api-key
where it asks for one) it measures a running one instead, through Envoy only (the compose stack: `python -m
deploy.containers --keep`, then --envoy 127.0.0.1:18080 and the key it prints).
The in-process row runs the same models with no network: detector, line grouping, crops, recognizer.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.timing import timed  # noqa: E402
from handwriting import OcrClient  # noqa: E402
from handwriting.stack import LocalStack, StackConfig  # noqa: E402
from services.common.images import decode_image  # noqa: E402
from services.common.settings import (  # noqa: E402
    DEFAULT_DETECTOR_WEIGHTS,
    DEFAULT_RECOGNIZER_DIR,
    ImageLimits,
    RecognizerSettings,
    load,
)
from training.inprocess import read_page  # noqa: E402


def summary(name: str, seconds: list[float], extra: str = "") -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"| {name} | {statistics.median(seconds) * 1000:.0f} | {p95 * 1000:.0f} | {extra} |"


def in_process(image_bytes: bytes, repeats: int) -> tuple[list[float], dict]:
    """The whole page with the models in this process; stage times from the same runs."""
    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import Recognizer

    # HW_BACKEND, HW_DEVICE and HW_DTYPE as the services read them (the stack inherits them)
    settings = load(RecognizerSettings)
    detector = Detector(DEFAULT_DETECTOR_WEIGHTS, device=settings.device, backend=settings.backend)
    recognizer = Recognizer(
        DEFAULT_RECOGNIZER_DIR,
        lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR),
        device=settings.device,
        backend=settings.backend,
        dtype=settings.dtype,
        decoder_dtype=settings.decoder_dtype,
    )
    detect_times, recognize_times = [], []
    detect, recognize = detector.predict, recognizer.predict

    def timed_detect(*args, **kwargs):
        started = time.perf_counter()
        result = detect(*args, **kwargs)
        detect_times.append(time.perf_counter() - started)
        return result

    def timed_recognize(*args, **kwargs):
        started = time.perf_counter()
        result = recognize(*args, **kwargs)
        recognize_times.append(time.perf_counter() - started)
        return result

    detector.predict, recognizer.predict = timed_detect, timed_recognize
    totals, lines = [], []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        lines = read_page(detector, recognizer, decode_image(image_bytes, ImageLimits()))
        totals.append(time.perf_counter() - started)
    stages = {
        "detector": statistics.median(detect_times[1:]),
        "recognizer": statistics.median(recognize_times[1:]),
        "words": sum(len(line.split()) for line in lines),
    }
    return totals[1:], stages


def through_envoy(address: str, image_bytes: bytes, repeats: int, api_key: str | None = None) -> list[str]:
    """gRPC and REST/JSON rows through the Envoy at `address`."""
    with OcrClient(address, api_key=api_key) as client:
        rows = [
            summary(
                "gRPC through Envoy",
                timed(lambda: client.process_page(image_bytes), repeats),
                "same port as REST",
            )
        ]
    body = json.dumps({"image": {"content": base64.b64encode(image_bytes).decode()}}).encode()
    headers = {"content-type": "application/json", **({"x-api-key": api_key} if api_key else {})}

    def rest() -> None:
        request = urllib.request.Request(f"http://{address}/v1/pages:process", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    rows.append(summary("REST/JSON through Envoy", timed(rest, repeats), "base64 image, JSON page"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "samples" / "page.png")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--envoy", help="HOST:PORT of a running stack's Envoy: measure it instead of a local one")
    parser.add_argument("--api-key", help="the key that Envoy asks for (HW_API_KEYS)")
    args = parser.parse_args(argv)
    image_bytes = args.image.read_bytes()

    rows = []
    if args.envoy:
        rows += through_envoy(args.envoy, image_bytes, args.repeats, args.api_key)
    else:
        seconds, stages = in_process(image_bytes, args.repeats)
        rows.append(
            summary(
                "in-process (models only)",
                seconds,
                f"{stages['words']} words; detector {stages['detector'] * 1000:.0f} ms, "
                f"recognizer {stages['recognizer'] * 1000:.0f} ms",
            )
        )
        config = StackConfig.on_free_ports(log_dir=REPO_ROOT / "runs" / "bench")
        stack = LocalStack(config)
        stack.start()
        try:
            with OcrClient(f"127.0.0.1:{config.orchestrator_port}") as client:
                rows.append(
                    summary(
                        "gRPC to the orchestrator",
                        timed(lambda: client.process_page(image_bytes), args.repeats),
                        "three processes",
                    )
                )
            rows += through_envoy(f"127.0.0.1:{config.envoy_port}", image_bytes, args.repeats)
        finally:
            stack.stop()
    print(f"{args.image.name}, {args.repeats} repeats after one warm-up, this machine")
    print("| path | p50 ms | p95 ms | notes |\n|---|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
