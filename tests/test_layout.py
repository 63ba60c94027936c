"""Line grouping and reading order from word boxes."""

from __future__ import annotations

import math
import os
import random

import pytest

from services.orchestrator.layout import group_into_lines


def grid(lines: int, words: int, height=30, width=80, gap=25, pitch=60, slope=0.0, jitter=0.0, seed=0):
    """Boxes of a page with `lines` lines of `words` words; returns boxes and the true (line, word) of each."""
    rng = random.Random(seed)
    boxes, truth = [], []
    for line in range(lines):
        for word in range(words):
            x = 50 + word * (width + gap)
            y = 40 + line * pitch + slope * x + rng.uniform(-jitter, jitter)
            w = width * rng.uniform(0.6, 1.2)
            boxes.append((x, y, x + w, y + height))
            truth.append((line, word))
    order = list(range(len(boxes)))
    rng.shuffle(order)  # the detector returns boxes in no particular order
    return [boxes[i] for i in order], [truth[i] for i in order]


def as_truth(lines, truth):
    return [[truth[i] for i in line] for line in lines]


def expected(lines: int, words: int):
    return [[(line, word) for word in range(words)] for line in range(lines)]


def test_straight_lines_in_reading_order():
    boxes, truth = grid(5, 6)
    assert as_truth(group_into_lines(boxes), truth) == expected(5, 6)


def test_rotated_page_keeps_lines_apart():
    # 5 degrees: over 6 words the line drifts by ~55 px, nearly a line pitch
    boxes, truth = grid(6, 6, slope=math.tan(math.radians(5)))
    assert as_truth(group_into_lines(boxes), truth) == expected(6, 6)


def test_uneven_baselines():
    boxes, truth = grid(4, 8, jitter=8, seed=3)
    assert as_truth(group_into_lines(boxes), truth) == expected(4, 8)


def test_words_of_different_heights_on_one_line():
    boxes = [(10, 100, 60, 130), (70, 90, 120, 135), (130, 105, 170, 128), (10, 160, 60, 190)]
    assert group_into_lines(boxes) == [[0, 1, 2], [3]]


def test_empty_and_single():
    assert group_into_lines([]) == []
    assert group_into_lines([(0, 0, 10, 10)]) == [[0]]


def test_nested_detections_of_one_word_merge_into_their_union():
    from services.common.geometry import LINE, WORD
    from services.detector.model import Detection, merge_nested

    part = Detection(WORD, (7, 24, 91, 61), 0.68)  # the x-height band of "word"
    whole = Detection(WORD, (0, 2, 148, 70), 0.41)
    neighbour = Detection(WORD, (160, 5, 220, 70), 0.9)
    line = Detection(LINE, (0, 0, 220, 72), 0.8)  # other classes never merge with words
    merged = merge_nested([part, whole, neighbour, line])
    assert sorted(merged, key=lambda d: (d.class_id, d.box)) == [
        Detection(WORD, (0, 2, 148, 70), 0.68),
        Detection(WORD, (160, 5, 220, 70), 0.9),
        line,
    ]
    # words that merely touch or overlap a little stay apart
    apart = [Detection(WORD, (0, 0, 50, 20), 0.9), Detection(WORD, (45, 0, 95, 20), 0.8)]
    assert merge_nested(apart) == apart


def test_a_word_box_grows_into_a_weaker_box_that_holds_it_and_no_other_word():
    from services.common.geometry import LINE, WORD
    from services.detector.model import Detection, grow_into_weaker

    body = Detection(WORD, (7, 22, 87, 65), 0.58)  # "wor" of "word": the confident box
    neighbour = Detection(WORD, (160, 5, 220, 70), 0.9)
    line = Detection(LINE, (0, 0, 220, 72), 0.8)
    whole = (1, 0, 148, 77)  # the whole word, found with less confidence
    assert grow_into_weaker([body, neighbour, line], [whole]) == [Detection(WORD, whole, 0.58), neighbour, line]
    both = (0, 0, 225, 75)  # holds both words: joins neither
    assert grow_into_weaker([body, neighbour], [both]) == [body, neighbour]
    beside = (60, 20, 140, 66)  # holds under 0.6 of the body
    assert grow_into_weaker([body, neighbour], [beside]) == [body, neighbour]
    far = (0, 0, 300, 70)  # would make it more than twice as wide (and touch the neighbour)
    assert grow_into_weaker([body], [far]) == [body]
    assert grow_into_weaker([body], [(20, 0, 150, 70), (0, 20, 60, 80)]) == [Detection(WORD, (0, 0, 150, 80), 0.58)]


def test_growing_into_weaker_boxes_only_widens_the_boxes_found(sample_page):
    """On the sample page: the same words found, each box the same or larger, a few larger."""
    from PIL import Image

    from services.common import geometry
    from services.common.geometry import WORD
    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector

    page = Image.open(sample_page)
    plain = Detector(DEFAULT_DETECTOR_WEIGHTS, extend_score=0).predict(page)
    grown = Detector(DEFAULT_DETECTOR_WEIGHTS).predict(page)
    assert [(d.class_id, d.score) for d in grown] == [(d.class_id, d.score) for d in plain]
    words = [(a.box, b.box) for a, b in zip(plain, grown, strict=True) if a.class_id == WORD]
    assert all(geometry.union([a, b]) == b for a, b in words)
    assert sum(a != b for a, b in words) < 0.1 * len(words)


def test_word_boxes_much_flatter_than_the_words_are_dropped():
    from services.common.geometry import LINE, WORD
    from services.detector.model import Detection, drop_flat_words

    words = [Detection(WORD, box, 0.9) for box in ((10, 10, 60, 35), (70, 12, 120, 36), (130, 9, 170, 35))]
    edge_strip = Detection(WORD, (0, 475, 124, 480), 0.35)  # found once along the bottom edge of a page
    line = Detection(LINE, (0, 100, 170, 104), 0.5)  # other classes are left alone
    assert drop_flat_words([*words, edge_strip, line]) == [*words, line]
    few = [Detection(WORD, (0, 0, 9, 3), 0.9), Detection(WORD, (0, 10, 50, 30), 0.9)]
    assert drop_flat_words(few) == few  # too few words to judge


def test_ink_in_a_wide_gap_between_found_words_is_a_missed_word():
    from PIL import Image, ImageDraw

    from services.orchestrator.ink import missed_words

    page = Image.new("L", (700, 200), 235)  # grey paper
    draw = ImageDraw.Draw(page)
    words = [(20, 60, 140, 100), (200, 62, 300, 100), (380, 60, 500, 98), (560, 61, 680, 100)]
    for left, top, right, bottom in words:  # strokes, not solid blocks: a word's ink
        for x in range(left, right, 9):
            draw.line((x, top, x + 5, bottom), fill=30, width=3)
    draw.line((330, 130, 350, 135), fill=30, width=2)  # a stray stroke below the line, in a gap
    boxes = [words[0], words[2], words[3]]  # the detector missed the second word
    lines = [[0, 1, 2]]
    [(line, box)] = missed_words(page, boxes, lines)
    assert line == 0
    left, top, right, bottom = box
    assert abs(left - 200) <= 3 and abs(right - 306) <= 4 and abs(top - 62) <= 3 and abs(bottom - 101) <= 3
    # words close together (no gap), a blank gap, and a gap with only a stray stroke: nothing to add
    assert missed_words(page, [words[2], words[3]], [[0, 1]]) == []
    blank = Image.new("L", (700, 200), 235)
    for box in boxes:
        ImageDraw.Draw(blank).rectangle(box, fill=30)
    assert missed_words(blank, boxes, lines) == []


def test_neighbouring_word_boxes_that_overlap_are_parted_at_the_lightest_column():
    from PIL import Image, ImageDraw

    from services.orchestrator.ink import part_overlaps

    page = Image.new("L", (400, 100), 235)
    draw = ImageDraw.Draw(page)
    for left, right in ((20, 110), (126, 250), (270, 380)):  # three words; blank paper at 110-126 and 250-270
        for x in range(left, right, 8):
            draw.line((x, 30, x + 4, 70), fill=30, width=3)
    # "on" found whole; "line" found reaching back into "on"; the third box holds no neighbour
    boxes = [(18.0, 28.0, 120.0, 72.0), (95.0, 25.0, 252.0, 75.0), (268.0, 28.0, 382.0, 72.0)]
    assert part_overlaps(page, boxes, [[0, 1, 2]]) == 1
    (left_end, right_start) = boxes[0][2], boxes[1][0]
    assert left_end == right_start and 114 <= left_end <= 120  # in the blank after the first word's ink
    assert boxes[0][:2] == (18.0, 28.0) and boxes[1][1:] == (25.0, 252.0, 75.0) and boxes[2] == (268, 28, 382, 72)
    inside = [(18.0, 28.0, 252.0, 72.0), (126.0, 28.0, 250.0, 72.0)]  # one holds the other: not a pair to part
    assert part_overlaps(page, inside, [[0, 1]]) == 0 and inside[1] == (126.0, 28.0, 250.0, 72.0)


def test_the_onnx_detector_finds_the_boxes_of_the_torch_one(sample_page, tmp_path, monkeypatch):
    """The default backend (ONNX Runtime, exported at start) and torch: the same boxes, classes and scores."""
    import tempfile

    import torch
    from PIL import Image

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector

    page = Image.open(sample_page)
    threads = torch.get_num_threads()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    on_onnx, on_torch = Detector(DEFAULT_DETECTOR_WEIGHTS), Detector(DEFAULT_DETECTOR_WEIGHTS, backend="torch")
    # the exported graph lives in its session: its folder is gone once loaded (a killed service leaves nothing)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith("detector-onnx-")]
    assert (on_onnx.backend, on_torch.backend) == ("onnx", "torch")
    assert torch.get_num_threads() == threads  # ultralytics' own choice (cores - 1) is undone
    # its ONNX Runtime session is one whose threads do not busy-wait between runs
    options = on_onnx.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for image in (page, page.crop((0, 0, 300, 200))):  # a page, and a small image padded onto a canvas
        expected, got = on_torch.predict(image), on_onnx.predict(image)
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            assert a.class_id == b.class_id and abs(a.score - b.score) < 1e-3
            assert max(abs(x - y) for x, y in zip(a.box, b.box, strict=True)) < 0.5


def test_the_letterbox_and_nms_here_give_ultralytics_boxes_on_the_same_graph(sample_page, tmp_path):
    """The ONNX backend letterboxes the pages and suppresses the boxes in numpy (no torch, no ultralytics):
    ultralytics' predict on the same graph finds the same boxes, scores and classes, at the service's two score
    floors and IoUs, on pages of several shapes and on a batch."""
    import numpy as np
    from PIL import Image

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector, _ultralytics, export_graph

    detector = Detector(DEFAULT_DETECTOR_WEIGHTS)
    graph, _ = export_graph(DEFAULT_DETECTOR_WEIGHTS, 640)
    (tmp_path / "detector.onnx").write_bytes(graph)
    with _ultralytics():
        from ultralytics import YOLO

        model = YOLO(str(tmp_path / "detector.onnx"), task="detect")
    page = Image.open(sample_page).convert("RGB")
    images = [np.asarray(page), np.asarray(page.resize((1280, 700))), np.asarray(page.crop((0, 0, 700, 650)))]
    images.append(detector._network_input(page.crop((0, 0, 300, 200))))  # a small image on its canvas
    for conf, iou in ((0.25, 0.3), (0.1, 0.7)):
        for batch in ([image] for image in images):
            found = detector._boxes(batch, conf, iou, 3000)
            expected = model.predict([a[:, :, ::-1] for a in batch], imgsz=640, conf=conf, iou=iou, max_det=3000)
            for (boxes, scores, classes), result in zip(found, expected, strict=True):
                assert len(boxes) > 10 and classes.tolist() == result.boxes.cls.int().tolist()
                assert np.abs(boxes - result.boxes.xyxy.numpy()).max() < 1e-3
                assert np.abs(scores - result.boxes.conf.numpy()).max() < 1e-5
    pair = [images[0], images[0][:, ::-1].copy()]
    found, expected = detector._boxes(pair, 0.25, 0.3, 1000), model.predict([a[:, :, ::-1] for a in pair], iou=0.3)
    for (boxes, _, _), result in zip(found, expected, strict=True):
        assert np.abs(boxes - result.boxes.xyxy.numpy()).max() < 1e-3


TORCH_FREE_DETECTOR = """
import json, sys
sys.modules["torch"] = sys.modules["torchvision"] = sys.modules["ultralytics"] = None  # none can be imported
from PIL import Image
from services.detector.model import Detector

detector = Detector(sys.argv[1])
assert detector.model is None and detector.session is not None
try:
    Detector(sys.argv[3])  # the weights alone: no graph to serve, nothing to export it with
except RuntimeError as error:
    assert "services.detector.model --weights" in str(error)
else:
    raise AssertionError("weights without a graph loaded without torch")
print(json.dumps([[d.class_id, list(d.box), d.score] for d in detector.predict(Image.open(sys.argv[2]))]))
"""


def test_a_serving_folder_finds_the_boxes_without_torch_or_ultralytics(sample_page, tmp_path):
    """`python -m services.detector.model --weights W --out F` (what the CPU image runs at build): a process that
    cannot import torch, torchvision or ultralytics finds the page's boxes from it, as the weights do here; a graph
    of other weights is refused."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from services.common import onnx_sessions
    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector, write_serving_folder

    folder = tmp_path / "detector"
    write_serving_folder(DEFAULT_DETECTOR_WEIGHTS, folder)
    weights = folder / DEFAULT_DETECTOR_WEIGHTS.name
    run = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_DETECTOR, str(weights), str(sample_page), str(DEFAULT_DETECTOR_WEIGHTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    expected = Detector(DEFAULT_DETECTOR_WEIGHTS).predict(Image.open(sample_page))
    assert got == [[d.class_id, list(d.box), d.score] for d in expected]
    meta = folder / onnx_sessions.GRAPHS_FOLDER / "onnx.json"
    meta.write_text(meta.read_text().replace(onnx_sessions.file_digest(weights), "0" * 64))
    with pytest.raises(ValueError, match="other weights"):
        Detector(weights)


def test_a_page_finds_the_same_boxes_alone_and_in_a_batch(sample_page):
    """`predict_batch` runs pages of one padded size and score floor in one network call: each page's boxes are
    those it finds alone (pages of other sizes, small ones padded onto a canvas, their own score floors)."""
    from PIL import Image, ImageOps

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector

    page = Image.open(sample_page).convert("RGB")
    pages = [(page, None), (ImageOps.mirror(page), None), (page.crop((0, 0, 300, 200)), None), (page, 0.5)]
    pages.append((page.resize((900, 700)), None))
    detector = Detector(DEFAULT_DETECTOR_WEIGHTS)
    alone = [detector.predict(image, min_score) for image, min_score in pages]
    assert all(alone) and len(alone[3]) < len(alone[0])  # every page finds words; a higher floor, fewer
    assert detector.predict_batch(pages) == alone


def test_an_unknown_detector_backend_is_a_clear_error():
    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import Detector

    with pytest.raises(ValueError, match="backend"):
        Detector(DEFAULT_DETECTOR_WEIGHTS, backend="tensorrt")


def test_loading_ultralytics_leaves_the_thread_settings_of_child_processes_alone():
    """ultralytics sets OMP_NUM_THREADS=1 in os.environ when imported: a local stack started afterwards would run
    its services on one thread. The detector's set-up puts the environment back (checked in a fresh process,
    where ultralytics is imported for the first time)."""
    import subprocess
    import sys

    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None); os.environ['MKL_NUM_THREADS'] = '3'\n"
        "from services.detector.model import configure_ultralytics_offline\n"
        "configure_ultralytics_offline()\n"
        "import ultralytics.utils\n"
        "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "3"]
    # and loading the detector, which exports its graph through ultralytics (a stack started afterwards by the
    # same process, as benchmarks/latency.py does, ran at 700 ms a page against 430 when an early import of
    # ultralytics set the variable)
    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None)\n"
        "from services.common.settings import DEFAULT_DETECTOR_WEIGHTS\n"
        "from services.detector.model import Detector\n"
        "Detector(DEFAULT_DETECTOR_WEIGHTS)\n"
        "print(os.environ.get('OMP_NUM_THREADS'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "None"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: one thread is all there is")
def test_the_detector_runs_on_every_core_when_ultralytics_is_what_imports_torch():
    """ultralytics imports torch under its OMP_NUM_THREADS=1: torch then ran on one thread, and so did the ONNX
    Runtime session made after it (a local stack's detector: 33 ms a page where two cores take 24). Checked in a
    fresh process, where nothing has imported torch before the detector loads."""
    import subprocess
    import sys

    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None)\n"
        "from services.common.settings import DEFAULT_DETECTOR_WEIGHTS\n"
        "from services.detector.model import Detector\n"
        "detector = Detector(DEFAULT_DETECTOR_WEIGHTS)\n"
        "import torch\n"
        "print(detector.session.get_session_options().intra_op_num_threads, torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    cores = len(os.sched_getaffinity(0))
    assert out.split()[-2:] == [str(cores), str(cores)]


def test_a_small_image_goes_to_the_network_at_its_own_scale_on_a_canvas_no_bigger_than_it_needs(sample_page):
    """An image under the network's size is not upscaled: it is padded with white to the network's size along its
    longer side (the letterbox keeps its scale) and to the stride along the other, at least SMALL_IMAGE_SIDE; its
    words are found where they are, as on the page."""
    import json

    from PIL import Image

    from services.common import geometry
    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS
    from services.detector.model import SMALL_IMAGE_SIDE, Detector

    detector = Detector(DEFAULT_DETECTOR_WEIGHTS)
    page = Image.open(sample_page).convert("RGB")
    truth = json.loads(sample_page.with_suffix(".json").read_text())
    line = page.crop((0, 80, 560, 150))  # a line and a half: 560 x 70
    assert detector._network_input(line).shape == (SMALL_IMAGE_SIDE, 640, 3)
    assert detector._network_input(line.rotate(90, expand=True)).shape == (640, SMALL_IMAGE_SIDE, 3)
    assert detector._network_input(page.crop((0, 0, 300, 200))).shape == (224, 640, 3)
    assert detector._network_input(page).shape == (480, 1000, 3)  # (as it is: the letterbox scales it)
    # the words wholly inside the crop are found, each by a box in the crop's coordinates
    found = [d.box for d in detector.predict(line)]
    inside = [w["box"] for w in truth["words"] if w["box"][1] >= 80 and w["box"][3] <= 150 and w["box"][2] <= 560]
    assert inside
    for left, top, right, bottom in inside:
        box = (left, top - 80, right, bottom - 80)
        assert any(geometry.iou(box, f) > 0.5 for f in found), box
