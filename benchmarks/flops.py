"""Work per page, and what it means on a GPU: the floating-point operations each stage does on one page
(counted by torch's FlopCounterMode while the models read it, in torch), the time each stage takes on this
machine in the same run, and from them an estimate of pages a minute on an NVIDIA T4. Prints measured
figures and labelled estimates; asserts nothing.

    .venv/bin/python benchmarks/flops.py [--image samples/page.png] [--repeats 5]

The estimate is a bound from two sides, both printed: the arithmetic (the page's FLOPs at a stated share
of the T4's fp16 tensor-core peak) and the decoder's sequential steps (each generated token is one small
step that waits for the one before; a step's time on a GPU is a stated assumption). The lower of the two
bounds the page rate; batching pages together raises the arithmetic side and leaves the step side alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from services.common.images import decode_image  # noqa: E402
from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR, ImageLimits  # noqa: E402
from training.inprocess import read_page  # noqa: E402

# NVIDIA T4 data sheet: 65 TFLOPS fp16 with tensor cores, 8.1 TFLOPS fp32.
T4_FP16_FLOPS = 65e12
T4_FP32_FLOPS = 8.1e12
# Assumptions, not measurements: the share of peak that small convolution and attention batches reach,
# and the time of one decoder step (3 layers, a batch of crops) with its kernel launches.
ASSUMED_PEAK_SHARE = 0.2
ASSUMED_STEP_SECONDS = 0.002


class Counted:
    """Wraps a model call: counts the FLOPs of every call into `flops`, and its wall time into `seconds`."""

    def __init__(self, call):
        self.call, self.flops, self.seconds, self.counting = call, 0, [], False

    def __call__(self, *args, **kwargs):
        if not self.counting:
            started = time.perf_counter()
            result = self.call(*args, **kwargs)
            self.seconds.append(time.perf_counter() - started)
            return result
        counter = FlopCounterMode(display=False)
        with counter:
            result = self.call(*args, **kwargs)
        self.flops += counter.get_total_flops()
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "samples" / "page.png")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import Recognizer

    page = decode_image(args.image.read_bytes(), ImageLimits())
    detector = Detector(DEFAULT_DETECTOR_WEIGHTS, backend="torch")  # FLOPs are counted in torch
    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), backend="torch")
    detect = Counted(detector.predict)
    encode = Counted(recognizer._encode)
    generate = Counted(recognizer.model.generate)
    score = Counted(recognizer._score)
    steps: list[int] = []
    plain_generate = generate.call

    def generate_and_count_steps(*a, **k):
        output = plain_generate(*a, **k)
        steps.append(output.sequences.shape[1] - 1)
        return output

    generate.call = generate_and_count_steps
    detector.predict, recognizer._encode, recognizer._score = detect, encode, score
    recognizer.model.generate = generate
    stages = (("detector", detect), ("recognizer encoder", encode), ("decoder", generate), ("scoring", score))

    read_page(detector, recognizer, page)  # warm-up
    for _, counted in stages:
        counted.counting = True
    steps.clear()
    lines = read_page(detector, recognizer, page)  # one counted page
    decoder_steps, decoder_calls = sum(steps), len(steps)
    for _, counted in stages:
        counted.counting = False
        counted.seconds.clear()
    totals = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        read_page(detector, recognizer, page)
        totals.append(time.perf_counter() - started)

    words = sum(len(line.split()) for line in lines)
    print(
        f"{args.image.name} ({words} words), torch on this machine ({torch.get_num_threads()} threads), "
        f"median of {args.repeats} pages"
    )
    print("| stage | GFLOP a page | ms a page here | GFLOP/s here |\n|---|---:|---:|---:|")
    total_flops = 0
    for name, counted in stages:
        ms = 1000 * sum(counted.seconds) / args.repeats
        total_flops += counted.flops
        rate = counted.flops / 1e9 / (ms / 1000) if ms else float("nan")
        print(f"| {name} | {counted.flops / 1e9:.2f} | {ms:.0f} | {rate:.1f} |")
    page_seconds = statistics.median(totals)
    print(
        f"| whole page (with crops, layout, lexicon) | {total_flops / 1e9:.2f} | {1000 * page_seconds:.0f} | "
        f"{total_flops / 1e9 / page_seconds:.1f} |"
    )
    print(f"decoder steps a page (tokens generated, all batches): {decoder_steps} in {decoder_calls} calls")

    arithmetic = T4_FP16_FLOPS * ASSUMED_PEAK_SHARE / total_flops  # pages a second
    sequential = 1 / (decoder_steps * ASSUMED_STEP_SECONDS)
    fp32 = T4_FP32_FLOPS * ASSUMED_PEAK_SHARE / total_flops
    print(
        "\nT4 estimate (assumptions: "
        f"{ASSUMED_PEAK_SHARE:.0%} of peak, {1000 * ASSUMED_STEP_SECONDS:.0f} ms a decoder step):"
    )
    print(f"- arithmetic bound, fp16: {60 * arithmetic:,.0f} pages/min (fp32: {60 * fp32:,.0f})")
    print(f"- sequential decoder steps, one page at a time: {60 * sequential:,.0f} pages/min")
    print(
        f"- one page at a time: about {60 * min(arithmetic, sequential):,.0f} pages/min; pages batched together "
        "share their decoder steps, so the service's cross-request batching moves it towards the arithmetic bound"
    )


if __name__ == "__main__":
    main()
