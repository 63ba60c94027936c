"""End-to-end evaluation: pages through the whole pipeline and through the peer engines, one table.

    python -m training.evaluate --pages data/synth/pages/val            # starts the stack itself
    python -m training.evaluate --pages samples --address localhost:50051 --engines ours

Prints page CER and WER (words in reading order, whitespace-normalised), word detection precision
and recall at IoU 0.5, and seconds per page for each engine. Peers: rapidocr (PP-OCR ONNX models in
its wheel) and tesseract (Debian package); install them with scripts/install_peers.sh. An engine
that is not installed is reported as such, not silently skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common import geometry
from services.common.geometry import Box
from training.metrics import error_rates, match_boxes


@dataclass
class EngineResult:
    text: str
    word_boxes: list[Box] | None  # None when the engine gives no word boxes
    seconds: float


@dataclass
class Score:
    references: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    true_positives: int = 0
    predicted: int = 0
    truth: int = 0
    seconds: float = 0.0
    has_boxes: bool = True


def normalise(text: str) -> str:
    return " ".join(text.split())


def load_pages(folder: Path) -> list[tuple[Path, dict]]:
    """Pages with ground truth: `*.png` + `*.json` (text and word boxes), or a `labels.tsv` of image and text
    (real-dev: one line or word per image, no boxes)."""
    if (folder / "labels.tsv").exists():
        rows = [line.split("\t", 1) for line in (folder / "labels.tsv").read_text().splitlines() if "\t" in line]
        return [(folder / name, {"lines": [text], "words": []}) for name, text in rows]
    pages = []
    for truth_path in sorted(folder.glob("*.json")):
        image = truth_path.with_suffix(".png")
        if image.exists():
            pages.append((image, json.loads(truth_path.read_text())))
    return pages


def ours(address: str) -> Callable[[Path], EngineResult]:
    from handwriting import OcrClient

    client = OcrClient(address, timeout=120)

    def run(image: Path) -> EngineResult:
        started = time.perf_counter()
        page = client.process_page(image).page
        seconds = time.perf_counter() - started
        boxes = []
        for line in page.lines:
            for word in line.words:
                boxes.append(geometry.from_points((v.x, v.y) for v in word.bounding_poly.vertices))
        return EngineResult(page.text, boxes, seconds)

    return run


def rapidocr() -> Callable[[Path], EngineResult]:
    from rapidocr import RapidOCR

    engine = RapidOCR()

    def run(image: Path) -> EngineResult:
        started = time.perf_counter()
        output = engine(str(image), return_word_box=True)
        seconds = time.perf_counter() - started
        boxes = []
        for line in output.word_results or ():
            for _, _, points in line:
                boxes.append(geometry.from_points((p[0], p[1]) for p in points))
        return EngineResult("\n".join(output.txts or ()), boxes, seconds)

    return run


def tesseract() -> Callable[[Path], EngineResult]:
    binary = shutil.which("tesseract")
    if binary is None:
        raise ImportError("tesseract is not installed (scripts/install_peers.sh)")

    def run(image: Path) -> EngineResult:
        started = time.perf_counter()
        tsv = subprocess.run([binary, str(image), "-", "tsv"], capture_output=True, text=True, check=True).stdout
        seconds = time.perf_counter() - started
        boxes, lines = [], {}
        for row in tsv.splitlines()[1:]:
            cells = row.split("\t")
            if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
                left, top, width, height = (int(c) for c in cells[6:10])
                boxes.append((left, top, left + width, top + height))
                lines.setdefault(tuple(cells[1:5]), []).append(cells[11])
        return EngineResult("\n".join(" ".join(words) for words in lines.values()), boxes, seconds)

    return run


EASYHTR_VENV = Path(".venv-easyhtr")
EASYHTR_READ = """
import json, sys
import cv2
from htr_pipeline import read_page
for path in sys.argv[1:]:
    lines = read_page(cv2.imread(path, cv2.IMREAD_GRAYSCALE))
    boxes = [[w.aabb.xmin, w.aabb.ymin, w.aabb.xmax, w.aabb.ymax] for line in lines for w in line]
    print(json.dumps({"text": "\\n".join(" ".join(w.text for w in line) for line in lines), "boxes": boxes}))
"""


def easyhtr() -> Callable[[Path], EngineResult]:
    """easyhtr 0.1.1 (its own venv: it pins old numpy and onnxruntime), upper case only: scored ignoring case.
    Its wheel states no licence, so it is a comparison only."""
    python = EASYHTR_VENV / "bin" / "python"
    if not python.exists():
        raise ImportError(f"no {python} (scripts/install_peers.sh)")

    def run(image: Path) -> EngineResult:
        started = time.perf_counter()
        out = subprocess.run([str(python), "-c", EASYHTR_READ, str(image)], capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started  # includes the interpreter's start (about 1 s)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return EngineResult(result["text"], [tuple(b) for b in result["boxes"]], seconds)

    run.ignores_case = True
    return run


ENGINES = {"ours": None, "rapidocr": rapidocr, "tesseract": tesseract, "easyhtr": easyhtr}


def evaluate(pages: list[tuple[Path, dict]], engines: dict[str, Callable[[Path], EngineResult]]) -> dict[str, Score]:
    scores = {name: Score() for name in engines}
    for image, truth in pages:
        reference = normalise(" ".join(truth["lines"]))
        truth_boxes = [tuple(w["box"]) for w in truth["words"]]
        for name, engine in engines.items():
            result = engine(image)
            score = scores[name]
            ignores_case = getattr(engine, "ignores_case", False)
            score.references.append(reference.lower() if ignores_case else reference)
            score.hypotheses.append(normalise(result.text).lower() if ignores_case else normalise(result.text))
            score.seconds += result.seconds
            if result.word_boxes is None:
                score.has_boxes = False
            else:
                score.true_positives += match_boxes(truth_boxes, result.word_boxes)
                score.predicted += len(result.word_boxes)
                score.truth += len(truth_boxes)
    return scores


def table(scores: dict[str, Score], pages: int) -> str:
    rows = [
        "| engine | page CER | page WER | word det. precision | word det. recall | s/page |",
        "|---|---|---|---|---|---|",
    ]
    for name, score in scores.items():
        cer, wer = error_rates(score.references, score.hypotheses)
        if score.has_boxes and score.truth:
            precision = f"{score.true_positives / max(1, score.predicted):.3f}"
            recall = f"{score.true_positives / score.truth:.3f}"
        else:
            precision = recall = "-"
        rows.append(f"| {name} | {cer:.3f} | {wer:.3f} | {precision} | {recall} | {score.seconds / pages:.2f} |")
    return "\n".join(rows)


def start_local_stack():
    """The stack on the shipped models, on free loopback ports."""
    from handwriting.stack import LocalStack, StackConfig
    from services.common.settings import REPO_ROOT

    stack = LocalStack(StackConfig.on_free_ports(envoy=False, log_dir=REPO_ROOT / "runs" / "eval-logs"))
    stack.start()
    return stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=Path, default=Path("data/synth/pages/val"))
    parser.add_argument("--engines", default="ours,rapidocr,tesseract")
    parser.add_argument("--address", help="a running stack's orchestrator; default: start one on free ports")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N pages")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    pages = load_pages(args.pages)[: args.limit or None]
    if not pages:
        raise SystemExit(f"no pages with ground truth (*.png + *.json) in {args.pages}")
    stack = None
    engines: dict[str, Callable[[Path], EngineResult]] = {}
    try:
        for name in args.engines.split(","):
            if name == "ours":
                address = args.address
                if address is None:
                    stack = start_local_stack()
                    address = f"127.0.0.1:{stack.config.orchestrator_port}"
                engines[name] = ours(address)
            else:
                try:
                    engines[name] = ENGINES[name]()
                except ImportError as error:
                    print(f"{name}: not installed ({error}); run scripts/install_peers.sh")
        for engine in engines.values():  # warm-up outside the timings
            engine(pages[0][0])
        scores = evaluate(pages, engines)
    finally:
        if stack:
            stack.stop()
    print(f"{len(pages)} pages from {args.pages}")
    print(table(scores, len(pages)))
    if args.json:
        figures = {}
        for name, score in scores.items():
            cer, wer = error_rates(score.references, score.hypotheses)
            figures[name] = {
                "cer": cer,
                "wer": wer,
                "seconds_per_page": score.seconds / len(pages),
                "precision": score.true_positives / max(1, score.predicted),
                "recall": score.true_positives / max(1, score.truth),
            }
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
