"""Convert a local copy of the IAM Handwriting Database into the detector and recognizer datasets.

    python -m training.prepare_iam --iam /data/iam --out data/iam [--splits /data/iam/splits]

Expects IAM as downloaded after registration: `forms/*.png` (the scanned forms) and `xml/*.xml`
(one per form, with the word boxes as `cmp` components). Each form is cropped to its handwritten
part; words and lines become YOLO boxes and word crops exactly as `training.make_data` writes them.

Splits: with `--splits DIR` holding IAM's standard line-level task files (trainset.txt,
validationset1.txt, validationset2.txt, testset.txt: one line id per row), each form goes where its
lines are listed (validation sets are merged as `val`). Without them, forms are split by a stable
hash of the writer id (10% val), so no writer appears in both.
"""

from __future__ import annotations

import argparse
import hashlib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from PIL import Image

from services.common import geometry
from training.make_data import make_split_folders, write_sample, write_yolo_yaml
from training.synth.render import PageSample, WordBox

SPLIT_FILES = {"trainset.txt": "train", "validationset1.txt": "val", "validationset2.txt": "val", "testset.txt": "test"}
MARGIN = 40


def read_form(xml_path: Path) -> tuple[str, list[list[tuple[str, tuple[float, float, float, float]]]]]:
    """(writer id, lines of (word text, box)) from one IAM form XML."""
    root = ElementTree.parse(xml_path).getroot()
    lines = []
    for line in root.iter("line"):
        words = []
        for word in line.iter("word"):
            parts = [
                (int(c.get("x")), int(c.get("y")), int(c.get("width")), int(c.get("height"))) for c in word.iter("cmp")
            ]
            if not parts or not word.get("text"):
                continue
            box = (
                min(x for x, _, _, _ in parts),
                min(y for _, y, _, _ in parts),
                max(x + w for x, _, w, _ in parts),
                max(y + h for _, y, _, h in parts),
            )
            words.append((word.get("text"), box))
        if words:
            lines.append(words)
    return root.get("writer-id", ""), lines


def read_splits(folder: Path | None) -> dict[str, str]:
    """form id -> split, from IAM's line-level task files."""
    if folder is None:
        return {}
    forms = {}
    for filename, split in SPLIT_FILES.items():
        path = folder / filename
        if path.exists():
            for line_id in path.read_text().split():
                forms["-".join(line_id.split("-")[:2])] = split
    return forms


def hash_split(writer: str, val_fraction: float = 0.1) -> str:
    digest = int(hashlib.sha256(writer.encode()).hexdigest()[:8], 16)
    return "val" if digest / 0xFFFFFFFF < val_fraction else "train"


def form_sample(image: Image.Image, lines) -> PageSample:
    """Crop the form to its handwritten part and shift the boxes with it."""
    left, top, right, bottom = geometry.padded(
        geometry.union(box for line in lines for _, box in line), MARGIN, image.width, image.height
    )
    words, line_indices = [], []
    for line in lines:
        indices = []
        for text, (x0, y0, x1, y1) in line:
            indices.append(len(words))
            words.append(WordBox(text, (x0 - left, y0 - top, x1 - left, y1 - top)))
        line_indices.append(indices)
    return PageSample(image.crop((left, top, right, bottom)).convert("RGB"), words, line_indices)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iam", type=Path, required=True, help="folder with forms/ and xml/")
    parser.add_argument("--out", type=Path, default=Path("data/iam"))
    parser.add_argument("--splits", type=Path, help="folder with IAM's trainset.txt, validationset*.txt, testset.txt")
    parser.add_argument("--keep-pages", type=int, default=50, help="full pages kept per split for evaluation")
    args = parser.parse_args(argv)
    standard = read_splits(args.splits)
    rows: dict[str, list[str]] = {}
    line_rows: dict[str, list[str]] = {}
    kept: dict[str, int] = {}
    for xml_path in sorted((args.iam / "xml").glob("*.xml")):
        form_id = xml_path.stem
        image_path = args.iam / "forms" / f"{form_id}.png"
        if not image_path.exists():
            print(f"skipping {form_id}: {image_path} missing")
            continue
        writer, lines = read_form(xml_path)
        if not lines:
            continue
        split = standard.get(form_id) if standard else hash_split(writer or form_id)
        if split is None:  # not in any standard set
            continue
        if split not in rows:
            make_split_folders(args.out, split)
            rows[split], line_rows[split], kept[split] = [], [], 0
        with Image.open(image_path) as image:
            sample = form_sample(image, lines)
        words, form_lines = write_sample(args.out, split, form_id, sample, keep_page=kept[split] < args.keep_pages)
        rows[split] += words
        line_rows[split] += form_lines
        kept[split] += 1
    for split, split_rows in rows.items():
        (args.out / "recognizer" / split / "labels.tsv").write_text("\n".join(split_rows) + "\n")
        (args.out / "recognizer-lines" / split / "labels.tsv").write_text("\n".join(line_rows[split]) + "\n")
        print(f"{split}: {kept[split]} forms, {len(split_rows)} word crops, {len(line_rows[split])} line crops")
    write_yolo_yaml(args.out)


if __name__ == "__main__":
    main()
