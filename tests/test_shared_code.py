"""Exact values for the code every stage shares: boxes, the crop function, the page pipeline's word
assignment, the model runner's queue. A change to any of their constants must fail here."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from PIL import Image

from services.common import crops, geometry
from services.common.model_runner import BatchingRunner, DeadlineExpired, QueueFull
from services.orchestrator.pipeline import PipelineOptions, assign_words, is_straight


def test_boxes():
    assert geometry.union([(10, 20, 30, 40), (5, 25, 35, 38)]) == (5, 20, 35, 40)
    assert geometry.from_points([(3, 4), (1, 9), (7, 2)]) == (1, 2, 7, 9)
    assert geometry.intersection((0, 0, 10, 10), (5, 5, 20, 20)) == 25
    assert geometry.intersection((0, 0, 10, 10), (10, 0, 20, 10)) == 0
    assert geometry.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert geometry.contained((2, 2, 8, 8), (0, 0, 10, 10), 0.8)
    assert not geometry.contained((5, 5, 15, 15), (0, 0, 10, 10), 0.8)  # a quarter inside
    assert geometry.scale_to((10, 10, 50, 30), 2.0, 2.0, 90, 100) == (20, 20, 90, 60)  # clipped at the right
    assert geometry.scale_to((10, 10, 10.3, 30), 2.0, 2.0, 90, 100) is None  # 0.6 px wide
    assert geometry.padded((10.6, 20.2, 30.4, 40.5), 4.5, 33, 100) == (6, 15, 33, 45)
    with pytest.raises(ValueError):
        geometry.union([])


def gradient_page(width: int = 400, height: int = 300) -> Image.Image:
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    return Image.fromarray(((x * 3 + y * 7) % 256).astype(np.uint8), "L")


def test_crop_region_padding_and_pixels():
    page = gradient_page()
    box = (100.4, 50.2, 180.7, 90.9)  # 40.7 px tall: 0.12 x 40.7 = 4.884 px of padding
    assert crops.crop_box(box, 400, 300) == (95, 45, 186, 96)
    crop = crops.cut_crop(page, box)
    assert crop.mode == "L" and crop.size == (91, 51)
    assert np.array_equal(np.asarray(crop), np.asarray(page)[45:96, 95:186])
    # small boxes get at least 2 px; the page edge clips
    assert crops.crop_box((1, 1, 9, 6), 400, 300) == (0, 0, 11, 8)
    assert crops.cut_crop(page.convert("RGB"), box).tobytes() == crop.tobytes()  # any mode, the same crop


def test_tall_crops_are_shrunk_to_96_px_bilinear():
    page = gradient_page(600, 500)
    box = (50, 40, 350, 240)  # 200 px tall: 24 px padding -> 348 x 248 region
    assert crops.crop_box(box, 600, 500) == (26, 16, 374, 264)
    crop = crops.cut_crop(page, box)
    assert crop.size == (135, 96)  # 348 * 96 / 248 = 134.7
    expected = page.crop((26, 16, 374, 264)).resize((135, 96), Image.BILINEAR)
    assert crop.tobytes() == expected.tobytes()


def test_training_crops_are_the_crops_the_service_cuts(tmp_path):
    """make_data writes exactly what the orchestrator cuts from the same page after decoding it."""
    import json
    import random

    from services.common.images import decode_image
    from services.common.settings import ImageLimits
    from training import make_data
    from training.synth.render import PageSample, WordBox

    rng = random.Random(0)
    page = Image.fromarray(np.asarray(gradient_page(500, 300).convert("RGB")) // 2 + rng.randrange(60), "RGB")
    words = [WordBox("alpha", (20.5, 30.2, 120.7, 70.9)), WordBox("beta", (140.2, 28.0, 260.4, 75.3))]
    sample = PageSample(page, words, [[0, 1]])
    make_data.make_split_folders(tmp_path, "val")
    rows, line_rows = make_data.write_sample(tmp_path, "val", "p", sample, keep_page=True)
    assert [r.split("\t")[1] for r in rows] == ["alpha", "beta"] and line_rows == ["p_line00.png\talpha beta"]
    served_page = decode_image((tmp_path / "pages" / "val" / "p.png").read_bytes(), ImageLimits()).convert("L")
    truth = json.loads((tmp_path / "pages" / "val" / "p.json").read_text())
    for row, word in zip(rows, truth["words"], strict=True):
        written = Image.open(tmp_path / "recognizer" / "val" / row.split("\t")[0])
        assert written.tobytes() == crops.cut_crop(served_page, word["box"]).tobytes()
    line = Image.open(tmp_path / "recognizer-lines" / "val" / "p_line00.png")
    line_box = geometry.union(w["box"] for w in truth["words"])
    assert line.tobytes() == crops.cut_crop(served_page, line_box).tobytes()


def test_line_reading_is_shared_out_to_word_boxes():
    boxes = [(0, 0, 40, 10), (50, 0, 90, 10), (100, 0, 200, 10)]
    assert assign_words("one two three", boxes) == [([0], "one"), ([1], "two"), ([2], "three")]
    # more words than boxes, no positions: each word goes where its share of the characters puts its centre
    # along the line (0-200 px, cuts at 45 and 95): "a" at 5 px, "b" at 26, "cdefgh" at 74, "ijklmnop" at 158
    assert assign_words("a b cdefgh ijklmnop", boxes) == [([0], "a b"), ([1], "cdefgh"), ([2], "ijklmnop")]
    assert assign_words("onetwo three", boxes) == [([1], "onetwo"), ([2], "three")]  # a box may get nothing
    assert assign_words("", boxes) == [] and assign_words("x", []) == []
    # with each character's position (fractions of a crop spanning 0-200 px): the boxes part the words where
    # the recognizer read no space, a space read parts them inside a box, and a word over two boxes with no
    # gap between them (the detector cut it) takes both
    text, xs = "onetwothree", [5, 15, 25, 55, 65, 75, 110, 130, 150, 170, 190]
    assert assign_words(text, boxes, [x / 200 for x in xs], (0, 200)) == [([0], "one"), ([1], "two"), ([2], "three")]
    text, xs = "ab cd", [110, 120, 140, 150, 160]
    assert assign_words(text, boxes, [x / 200 for x in xs], (0, 200)) == [([2], "ab"), ([2], "cd")]
    touching = [(0, 0, 40, 10), (41, 0, 90, 10)]  # 1 px apart: under 0.2 x the height of 10 px
    assert assign_words("drugs", touching, [0.1, 0.3, 0.5, 0.7, 0.9], (0, 100)) == [([0, 1], "drugs")]
    with pytest.raises(ValueError, match="unit"):
        PipelineOptions(unit="page")


def test_only_straight_lines_are_read_whole():
    words = [(0, 10, 50, 30), (60, 12, 110, 32)]
    assert is_straight(geometry.union(words), words)  # 22 px tall for 20 px words
    slanted = [(0, 10, 50, 30), (60, 25, 110, 45)]
    assert not is_straight(geometry.union(slanted), slanted)  # 35 px: over 1.5 x 20


class GatedModel:
    """A model call that records what it was given and waits for `release` (set it to let calls run)."""

    def __init__(self):
        self.calls: list[list] = []
        self.release = threading.Event()
        self.running = threading.Event()

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        self.running.set()
        self.release.wait(10)
        if "boom" in items:
            raise RuntimeError("model failed")
        return [item * 10 for item in items]


async def test_batching_runner_joins_waiting_requests_into_one_call_and_splits_the_results():
    model = GatedModel()
    runner = BatchingRunner(model, max_items=5, max_wait=0.0)
    first = asyncio.ensure_future(runner.run([1, 2]))
    await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)  # the model is busy with [1, 2]
    waiting = [asyncio.ensure_future(runner.run(items)) for items in ([3], [4, 5], [6, 7, 8])]
    await asyncio.sleep(0)
    model.release.set()
    assert await first == [10, 20]
    assert await asyncio.gather(*waiting) == [[30], [40, 50], [60, 70, 80]]
    # while the model was busy the queue filled: [3] and [4, 5] fit in 5 items, [6, 7, 8] did not
    assert model.calls == [[1, 2], [3, 4, 5], [6, 7, 8]]
    assert await runner.run(list(range(9))) == [i * 10 for i in range(9)]  # larger than max_items: alone
    runner.close()


async def test_batching_runner_with_concurrency_runs_a_second_call_while_the_first_is_busy():
    both_running = threading.Barrier(2, timeout=10)  # broken (an error) unless two calls are in the model at once
    calls: list[list] = []

    def model(items: list) -> list:
        calls.append(list(items))
        if items[0] < 3:  # the first two calls meet; later ones need not wait
            both_running.wait()
        return [item * 10 for item in items]

    runner = BatchingRunner(model, max_items=5, max_wait=0.0, concurrency=2)
    first = asyncio.ensure_future(runner.run([1]))
    await asyncio.sleep(0.05)  # the first call is in the model, waiting at the barrier
    assert await asyncio.gather(first, runner.run([2])) == [[10], [20]]
    # later requests are answered too, each with its own results
    assert await asyncio.gather(*(runner.run([i]) for i in (3, 4, 5))) == [[30], [40], [50]]
    assert calls[:2] == [[1], [2]] and sorted(i for call in calls for i in call) == [1, 2, 3, 4, 5]
    runner.close()


async def test_batching_runner_honours_deadlines_queue_limit_and_failures():
    model = GatedModel()
    runner = BatchingRunner(model, max_items=10, max_wait=0.0, max_queue=2)
    loop = asyncio.get_running_loop()
    busy = asyncio.ensure_future(runner.run([1]))
    await loop.run_in_executor(None, model.running.wait, 10)
    expired = asyncio.ensure_future(runner.run([2], deadline=loop.time() - 1))  # already past when its turn comes
    failing = asyncio.ensure_future(runner.run(["boom"]))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await runner.run([3])
    model.release.set()
    assert await busy == [10]
    with pytest.raises(DeadlineExpired):
        await expired
    with pytest.raises(RuntimeError, match="model failed"):
        await failing
    assert [2] not in model.calls and ["boom"] in model.calls  # the expired request never ran
    assert await runner.run([4]) == [40]  # the runner goes on after a failure
    # a request the model fails on, in one call with others: each is run again alone, only it fails
    model.release.clear()
    model.running.clear()
    busy = asyncio.ensure_future(runner.run([5]))
    await loop.run_in_executor(None, model.running.wait, 10)
    joined = [asyncio.ensure_future(runner.run(items)) for items in ([6], ["boom", 7])]
    await asyncio.sleep(0)
    model.release.set()
    assert await busy == [50] and await joined[0] == [60]
    with pytest.raises(RuntimeError, match="model failed"):
        await joined[1]
    assert model.calls[-3:] == [[6, "boom", 7], [6], ["boom", 7]]
    runner.close()


def emf_records(text: str) -> list[dict]:
    """The CloudWatch Embedded Metric Format records among the lines of `text`."""
    import json

    records = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


async def test_metrics_are_written_as_emf_records_with_counts_values_and_gauges(capsys):
    from services.common.metrics import NAMESPACE, Metrics

    metrics = Metrics("recognizer", enabled=True)
    metrics.declare_counts("Crops", "Batches")
    metrics.gauge("QueueDepth", lambda: 7)
    metrics.count("Crops", 85)
    metrics.observe("BatchMs", 120.0)
    metrics.observe("BatchMs", 80.0)
    await metrics.flush()
    await metrics.flush()  # nothing happened since: counts of 0, the gauge as it is
    first, second = emf_records(capsys.readouterr().out)
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE and directive["Dimensions"] == [["Service"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Crops", "Batches", "BatchMs", "QueueDepth"}
    assert (first["Service"], first["Crops"], first["Batches"], first["QueueDepth"]) == ("recognizer", 85, 0, 7)
    assert first["BatchMs"] == [120.0, 80.0]
    assert (second["Crops"], second["QueueDepth"]) == (0, 7) and "BatchMs" not in second

    off = Metrics("recognizer", enabled=False)
    off.count("Crops")
    await off.run()  # returns at once: nothing is written when metrics are off
    assert not emf_records(capsys.readouterr().out) and not off.counts
