"""Render the synthetic datasets: pages with YOLO labels for the detector, word and line crops for the recognizer.

    python -m training.make_data --out data/synth --train-pages 1500 --val-pages 100

Training pages use the training font families and the wordfreq corpus; validation pages use the
font families reserved for evaluation and the GPL-3 text, so validation measures generalisation
to hands and words the models never saw. Deterministic by seed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from services.common import geometry
from services.common.crops import cut_crop
from training.synth.fonts import EVAL_FAMILIES, ensure_fonts, training_families
from training.synth.photo import render_photo
from training.synth.render import PageSample, render_page, render_strip
from training.synth.text import TextSampler, evaluation_vocabulary, training_vocabulary

DETECTOR_MAX_SIDE = 640
KIND_SEED_OFFSET = {"page": 0, "strip": 500_000_000, "photo": 700_000_000}

_worker_state: dict = {}


def _init_worker(split: str) -> None:
    if split == "train":
        families, vocabulary = training_families(), training_vocabulary()
    else:
        families, vocabulary = list(EVAL_FAMILIES), evaluation_vocabulary()
    _worker_state["fonts"] = ensure_fonts(families)
    _worker_state["vocabulary"] = vocabulary


def _yolo_line(class_id: int, box, width: int, height: int) -> str:
    left, top, right, bottom = box
    return (
        f"{class_id} {(left + right) / 2 / width:.6f} {(top + bottom) / 2 / height:.6f} "
        f"{(right - left) / width:.6f} {(bottom - top) / height:.6f}"
    )


def make_split_folders(out: Path, split: str) -> None:
    for folder in ("detector/images", "detector/labels", "recognizer", "recognizer-lines", "pages"):
        (out / folder / split).mkdir(parents=True, exist_ok=True)


def write_sample(out: Path, split: str, name: str, page: PageSample, keep_page: bool) -> tuple[list[str], list[str]]:
    """Write one page to both datasets; returns the recognizer's `crop<TAB>text` rows for words and for lines.

    Shared by the synthetic generator and the IAM preparation, so both give the same datasets. Crops
    are cut by `services.common.crops.cut_crop`, as the orchestrator cuts them; a line's box is the
    union of its word boxes, as the orchestrator makes it.
    """
    width, height = page.image.size
    labels = [_yolo_line(geometry.WORD, w.box, width, height) for w in page.words]
    labels += [_yolo_line(geometry.LINE, box, width, height) for box, _ in page.line_boxes()]
    scale = min(1.0, DETECTOR_MAX_SIDE / max(width, height))
    small = page.image.convert("RGB").resize((round(width * scale), round(height * scale)), resample=3)
    small.save(out / "detector" / "images" / split / f"{name}.jpg", quality=92)
    (out / "detector" / "labels" / split / f"{name}.txt").write_text("\n".join(labels) + "\n")

    gray = page.image.convert("L")
    rows = []
    for word_index, word in enumerate(page.words):
        crop_name = f"{name}_{word_index:03d}.png"
        cut_crop(gray, word.box).save(out / "recognizer" / split / crop_name)
        rows.append(f"{crop_name}\t{word.text}")
    line_rows = []
    for line_index, (box, text) in enumerate(page.line_boxes()):
        crop_name = f"{name}_line{line_index:02d}.png"
        cut_crop(gray, box).save(out / "recognizer-lines" / split / crop_name)
        line_rows.append(f"{crop_name}\t{text}")
    if keep_page:  # full pages with ground truth, for end-to-end evaluation
        page.image.save(out / "pages" / split / f"{name}.png")
        truth = {
            "words": [{"text": w.text, "box": list(w.box)} for w in page.words],
            "lines": [" ".join(page.words[i].text for i in line) for line in page.lines],
        }
        (out / "pages" / split / f"{name}.json").write_text(json.dumps(truth))
    return rows, line_rows


def _make_page(job: tuple[str, int, int, Path, str]) -> tuple[list[str], list[str]]:
    split, seed, index, out, kind = job
    rng = random.Random(seed * 1_000_003 + index + KIND_SEED_OFFSET[kind])
    sampler = TextSampler(_worker_state["vocabulary"], rng)
    if kind == "strip":
        page = render_strip(sampler, _worker_state["fonts"], rng)
        return write_sample(out, split, f"{split}_strip_{index:06d}", page, keep_page=False)
    if kind == "photo":
        page = render_photo(sampler, _worker_state["fonts"], rng)
        return write_sample(out, split, f"{split}_photo_{index:06d}", page, keep_page=index < 20)
    page = render_page(sampler, _worker_state["fonts"], rng)
    return write_sample(out, split, f"{split}_{index:06d}", page, keep_page=index < 20)


def make_split(out: Path, split: str, pages: int, seed: int, workers: int, strips: int = 0, photos: int = 0) -> None:
    make_split_folders(out, split)
    jobs = [(split, seed, index, out, "page") for index in range(pages)]
    jobs += [(split, seed, index, out, "strip") for index in range(strips)]
    jobs += [(split, seed, index, out, "photo") for index in range(photos)]
    rows: list[str] = []
    line_rows: list[str] = []
    # forkserver, not fork: forking a process that runs threads (torch, gRPC, a test runner) can crash the child
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(split,)) as pool:
        for page_rows, page_line_rows in pool.map(_make_page, jobs, chunksize=8):
            rows.extend(page_rows)
            line_rows.extend(page_line_rows)
    (out / "recognizer" / split / "labels.tsv").write_text("\n".join(rows) + "\n")
    (out / "recognizer-lines" / split / "labels.tsv").write_text("\n".join(line_rows) + "\n")
    print(
        f"{split}: {pages} pages, {strips} line strips, {photos} photos, {len(rows)} word crops, "
        f"{len(line_rows)} line crops"
    )


def write_yolo_yaml(out: Path) -> Path:
    path = out / "detector" / "data.yaml"
    names = "\n".join(f"  {k}: {v}" for k, v in geometry.CLASS_NAMES.items())
    path.write_text(f"path: {(out / 'detector').resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/synth"))
    parser.add_argument("--train-pages", type=int, default=1500)
    parser.add_argument("--val-pages", type=int, default=100)
    parser.add_argument("--train-strips", type=int, default=0, help="single-line images with larger text")
    parser.add_argument("--val-strips", type=int, default=0)
    parser.add_argument("--train-photos", type=int, default=0, help="phone photos of pages lying on a table")
    parser.add_argument("--val-photos", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    # fonts are installed once, before the workers start, for the splits asked for only: the prepared GPU run
    # (scripts/gpu_train.sh) renders training pages and carries the training hands alone
    train = training_families() if args.train_pages or args.train_strips or args.train_photos else []
    val = list(EVAL_FAMILIES) if args.val_pages or args.val_strips or args.val_photos else []
    ensure_fonts(train + val)
    make_split(args.out, "train", args.train_pages, args.seed, args.workers, args.train_strips, args.train_photos)
    make_split(args.out, "val", args.val_pages, args.seed + 1, args.workers, args.val_strips, args.val_photos)
    print(f"detector dataset: {write_yolo_yaml(args.out)}")


if __name__ == "__main__":
    main()
