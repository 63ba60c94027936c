"""Training pipeline on tiny data: synthetic pages, IAM preparation, recognizer and detector training."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from services.common.crops import cut_crop
from services.orchestrator.layout import group_into_lines
from services.recognizer.checkpoint import load_checkpoint
from services.recognizer.model import Recognizer
from training import make_data, prepare_iam, train_detector, train_recognizer
from training.metrics import error_rates, match_boxes
from training.synth.fonts import EVAL_FAMILIES, ensure_fonts, training_families
from training.synth.render import render_page
from training.synth.text import TextSampler, evaluation_vocabulary, training_vocabulary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_data.main(["--out", str(out), "--train-pages", "3", "--val-pages", "2", "--workers", "1"])
    return out


def test_training_fonts_never_include_evaluation_families():
    assert not set(training_families()) & set(EVAL_FAMILIES)
    assert len(training_families()) >= 20


def test_synthetic_data_is_deterministic_and_consistent(synth, tmp_path):
    rows = (synth / "recognizer" / "train" / "labels.tsv").read_text().splitlines()
    assert len(rows) > 100
    name, text = rows[0].split("\t")
    assert (synth / "recognizer" / "train" / name).exists() and text
    labels = (synth / "detector" / "labels" / "train" / "train_000000.txt").read_text().splitlines()
    classes = {line.split()[0] for line in labels}
    assert classes == {"0", "1"}
    for line in labels:
        values = [float(v) for v in line.split()[1:]]
        assert all(0.0 <= v <= 1.0 for v in values)
    words_on_page = sum(1 for line in labels if line.startswith("0 "))
    assert words_on_page == sum(1 for row in rows if row.startswith("train_000000_"))
    again = tmp_path / "again"
    make_data.main(["--out", str(again), "--train-pages", "1", "--val-pages", "1", "--workers", "1"])
    assert (again / "detector/labels/train/train_000000.txt").read_text() == "\n".join(labels) + "\n"


def test_layout_recovers_the_lines_of_rendered_pages():
    fonts = ensure_fonts(list(EVAL_FAMILIES[:3]))
    rng = random.Random(5)
    for _ in range(4):
        page = render_page(TextSampler(evaluation_vocabulary(), rng), fonts, rng)
        boxes = [w.box for w in page.words]
        assert group_into_lines(boxes) == page.lines


def test_corpus_is_large_and_varied():
    vocabulary = training_vocabulary()
    assert len(vocabulary) > 10000
    words = TextSampler(vocabulary, random.Random(0)).words(2000)
    assert any(w[0].isupper() for w in words) and any(c.isdigit() for w in words for c in w)
    assert any(w[-1] in ",.;:!?" for w in words)
    assert not set(words) <= set(evaluation_vocabulary())


TINY_CONFIG = {
    "encoder": {
        "image_height": 32,
        "image_width": 64,
        "conv_channels": [8, 8, 16, 16, 32],
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "decoder": {"d_model": 32, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64},
    "batch_size": 4,
    "learning_rate": 0.001,
    "warmup_steps": 2,
    "ctc_weight": 0.3,
    "max_length": 24,
    "eval_every": 1000,
    "eval_samples": 8,
}


def test_recognizer_trains_resumes_and_fine_tunes(synth, tmp_path, tiny_stock_trocr_dir):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    first = tmp_path / "first"
    common = ["--data", str(synth / "recognizer"), "--config", str(config), "--threads", "1"]
    train_recognizer.main([*common, "--out", str(first), "--max-steps", "3"])
    state = json.loads((first / "training_state.json").read_text())
    assert state["steps"] == 3 and state["history"][-1]["crops"] == 8
    assert len(Recognizer(first, max_new_tokens=4).predict([Image.new("L", (40, 20), 255)])) == 1

    resumed = tmp_path / "resumed"
    val = tmp_path / "other-val"  # validation crops from elsewhere pick the checkpoint
    val.mkdir()
    rows = (synth / "recognizer" / "val" / "labels.tsv").read_text().splitlines()[:3]
    for row in rows:
        name = row.split("\t")[0]
        (val / name).write_bytes((synth / "recognizer" / "val" / name).read_bytes())
    (val / "labels.tsv").write_text("\n".join(rows) + "\n")
    train_recognizer.main(
        [*common, "--out", str(resumed), "--max-steps", "2", "--init-from", str(first), "--val", str(val)]
    )
    state = json.loads((resumed / "training_state.json").read_text())
    assert state["steps"] == 5 and len(state["recipe"]) == 2
    assert state["history"][-1]["crops"] == 3 and state["recipe"][-1]["val"] == [str(val)]

    # words and lines mixed, the encoder frozen: only the decoder moves
    frozen_config = tmp_path / "frozen.json"
    frozen_config.write_text(json.dumps({**TINY_CONFIG, "freeze_encoder": True, "learning_rate": 0.01}))
    frozen = tmp_path / "frozen"
    lines = tmp_path / "lines"  # the first line crops, labels cut to the tiny model's 23 characters
    (lines / "train").mkdir(parents=True)
    rows = (synth / "recognizer-lines" / "train" / "labels.tsv").read_text().splitlines()[:4]
    for row in rows:
        shutil.copy(synth / "recognizer-lines" / "train" / row.split("\t")[0], lines / "train")
    (lines / "train" / "labels.tsv").write_text(
        "\n".join(row.split("\t")[0] + "\t" + row.split("\t")[1][:20] for row in rows) + "\n"
    )
    train_recognizer.main(
        [
            "--data",
            str(synth / "recognizer"),
            str(lines),
            "--config",
            str(frozen_config),
            "--threads",
            "1",
            "--out",
            str(frozen),
            "--max-steps",
            "2",
            "--init-from",
            str(first),
            "--val",
            str(val),
        ]
    )
    before, after = load_checkpoint(first).model, load_checkpoint(frozen / "last").model
    assert all(
        torch.equal(a, b)
        for a, b in zip(before.encoder.state_dict().values(), after.encoder.state_dict().values(), strict=True)
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(before.decoder.parameters(), after.decoder.parameters(), strict=True)
    )
    assert json.loads((frozen / "training_state.json").read_text())["recipe"][-1]["data"] == [
        str(synth / "recognizer"),
        str(lines),
    ]

    finetuned = tmp_path / "finetuned"
    train_recognizer.main(
        [*common, "--out", str(finetuned), "--max-steps", "2", "--init-from", str(tiny_stock_trocr_dir)]
    )
    assert Recognizer(finetuned, max_new_tokens=4).model.config.encoder.model_type == "vit"


def test_label_ids_drop_the_start_token_and_end_with_eos():
    from services.recognizer.compact_trocr import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    labels = train_recognizer.label_ids(tokenizer, ["ab", "c"], tokenizer.bos_token_id, tokenizer.eos_token_id, 8)
    assert labels.tolist() == [
        [tokenizer.convert_tokens_to_ids("a"), tokenizer.convert_tokens_to_ids("b"), tokenizer.eos_token_id],
        [tokenizer.convert_tokens_to_ids("c"), tokenizer.eos_token_id, -100],
    ]


def test_detector_trains_evaluates_and_exports(synth, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: yolov8n.yaml\nimgsz: 128\nbatch: 2\nepochs: 1\ndevice: cpu\nworkers: 0\n")
    out = tmp_path / "detector"
    train_detector.main(["--data", str(synth / "detector" / "data.yaml"), "--config", str(config), "--out", str(out)])
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["validation"]["per_class"]) == {"word", "line"}
    assert 0.0 <= report["validation"]["mAP50"] <= 1.0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "detector.onnx"))
    assert session.get_inputs()[0].shape[2:] == [128, 128]


def test_metrics():
    assert error_rates(["hello world"], ["hello world"]) == (0.0, 0.0)
    cer, wer = error_rates(["abcd ef"], ["abxd ef"])
    assert cer == pytest.approx(1 / 7) and wer == pytest.approx(1 / 2)
    assert match_boxes([(0, 0, 10, 10), (20, 0, 30, 10)], [(1, 1, 10, 10), (50, 50, 60, 60)]) == 1


def make_iam_fixture(root: Path) -> None:
    """Two forms in IAM's layout: forms/<id>.png and xml/<id>.xml with word components."""
    (root / "forms").mkdir(parents=True)
    (root / "xml").mkdir()
    (root / "splits").mkdir()
    for form_id, writer, words in (("a01-000u", "000", ["A", "MOVE", "to"]), ("b02-010", "111", ["stop", "Mr."])):
        image = Image.new("L", (600, 500), 255)
        draw = ImageDraw.Draw(image)
        parts = []
        for i, text in enumerate(words):
            x, y = 60 + i * 150, 300
            draw.text((x, y), text, fill=0)
            parts.append(
                f'<word id="{form_id}-00-{i:02d}" tag="NN" text="{text.replace(".", "&#46;")}">'
                f'<cmp x="{x}" y="{y}" width="40" height="14"/><cmp x="{x + 40}" y="{y + 2}" width="20" height="16"/>'
                "</word>"
            )
        image.save(root / "forms" / f"{form_id}.png")
        line_text = " ".join(words)
        (root / "xml" / f"{form_id}.xml").write_text(
            f'<?xml version="1.0" encoding="ISO-8859-1"?><form id="{form_id}" writer-id="{writer}">'
            f'<machine-printed-part/><handwritten-part><line id="{form_id}-00" text="{line_text}">'
            + "".join(parts)
            + "</line></handwritten-part></form>"
        )
    (root / "splits" / "trainset.txt").write_text("a01-000u-00\n")
    (root / "splits" / "validationset1.txt").write_text("b02-010-00\n")


def test_iam_preparation_with_standard_splits(tmp_path):
    make_iam_fixture(tmp_path / "iam")
    out = tmp_path / "out"
    prepare_iam.main(["--iam", str(tmp_path / "iam"), "--out", str(out), "--splits", str(tmp_path / "iam" / "splits")])
    train_rows = (out / "recognizer" / "train" / "labels.tsv").read_text().split("\n")
    assert [row.split("\t")[1] for row in train_rows if row] == ["A", "MOVE", "to"]
    val_rows = (out / "recognizer" / "val" / "labels.tsv").read_text().split("\n")
    assert [row.split("\t")[1] for row in val_rows if row] == ["stop", "Mr."]
    labels = (out / "detector" / "labels" / "train" / "a01-000u.txt").read_text().splitlines()
    assert sum(line.startswith("0 ") for line in labels) == 3 and sum(line.startswith("1 ") for line in labels) == 1
    crop = Image.open(out / "recognizer" / "train" / train_rows[1].split("\t")[0])
    # the page was cropped to the handwriting: word boxes are relative to the crop, 40 px margin
    page = json.loads((out / "pages" / "train" / "a01-000u.json").read_text())
    assert page["words"][0]["box"][:2] == [40, 40]
    # crops are the service's, cut from the page
    page_image = Image.open(out / "pages" / "train" / "a01-000u.png").convert("L")
    assert crop.tobytes() == cut_crop(page_image, page["words"][1]["box"]).tobytes()


def test_box_jitter_moves_the_edges_and_keeps_the_paper_colour():
    crop = Image.new("L", (120, 40), 230)
    crop.paste(0, (20, 10, 100, 30))  # the "ink"
    rng = random.Random(1)
    jittered = [train_recognizer.jitter_crop(crop, rng, 0.1) for _ in range(20)]
    sizes = {j.size for j in jittered}
    assert len(sizes) > 10 and all(abs(w - 120) <= 16 and abs(h - 40) <= 16 for w, h in sizes)
    assert any(w > 120 for w, _ in sizes) and any(w < 120 for w, _ in sizes)
    for j in jittered:  # grown or cut, the corners are paper, never a fill colour of its own
        assert {j.getpixel((0, 0)), j.getpixel((j.width - 1, j.height - 1))} == {230}
    assert train_recognizer.jitter_crop(crop, rng, 0.0) is crop


def test_averaged_checkpoints_are_the_mean_of_their_weights(tiny_recognizer_dir, tiny_stock_trocr_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from training import average_checkpoints

    shifted = tmp_path / "shifted"
    shutil.copytree(tiny_recognizer_dir, shifted)
    weights = load_file(shifted / "model.safetensors")
    save_file({n: t + 1.0 if t.is_floating_point() else t for n, t in weights.items()}, shifted / "model.safetensors")
    soup = tmp_path / "soup"
    average_checkpoints.main([str(tiny_recognizer_dir), str(shifted), "--out", str(soup)])
    averaged = load_file(soup / "model.safetensors")
    for name, tensor in weights.items():
        expected = tensor + 0.5 if tensor.is_floating_point() else tensor
        assert averaged[name].allclose(expected, atol=1e-6), name
    state = json.loads((soup / "training_state.json").read_text())
    assert state["recipe"][-1] == {"average_of": [str(tiny_recognizer_dir), str(shifted)]}
    assert len(Recognizer(soup, max_new_tokens=4).predict([Image.new("L", (40, 20), 255)])) == 1
    with pytest.raises(ValueError, match="architecture"):
        average_checkpoints.average([tiny_recognizer_dir, tiny_stock_trocr_dir], tmp_path / "mixed")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints.average([tiny_recognizer_dir], tmp_path / "alone")


def test_a_photographed_page_keeps_its_word_boxes_on_the_ink():
    """The phone-photo renderer moves each word box with the page (homography), onto the ink."""
    import numpy as np

    from services.common import geometry
    from training.synth.photo import photograph
    from training.synth.render import PageSample, WordBox

    page = Image.new("RGB", (600, 800), "white")
    box = (200, 300, 420, 360)
    ImageDraw.Draw(page).rectangle(box, fill=(0, 0, 0))
    for seed in range(3):
        photo = photograph(PageSample(page, [WordBox("ink", box)], [[0]]), random.Random(seed))
        (moved,) = photo.words
        gray = np.asarray(photo.image.convert("L"), dtype=np.float32)
        # the ink: the darkest pixels within the page (the table may be dark too, so look near the box only)
        left, top, right, bottom = geometry.padded(moved.box, 40, *photo.image.size)
        window = gray[int(top) : int(bottom), int(left) : int(right)]
        ys, xs = np.nonzero(window < np.percentile(window, 20))
        ink = (left + xs.min(), top + ys.min(), left + xs.max(), top + ys.max())
        assert geometry.iou(ink, moved.box) > 0.6, (seed, ink, moved.box)


def test_corrections_teach_the_shipped_recognizer_the_words_it_got_wrong(tmp_path):
    """Six words in a script the shipped model has never seen (TeX's symbol font draws each letter as another
    sign) are corrected through the store; after fine-tuning the service's decoding reads them, and it still
    reads ordinary italic words it read before (the replay crops)."""
    import io

    import matplotlib
    from PIL import ImageFont

    from services.orchestrator.corrections import DirectoryStore
    from training import finetune_corrections

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"

    def render(word: str, font: str) -> Image.Image:
        typeface = ImageFont.truetype(str(fonts / font), 40)
        image = Image.new("L", (40 * len(word) + 40, 70), 255)
        draw = ImageDraw.Draw(image)
        draw.text((10, 10), word, font=typeface, fill=0)
        left, top, right, bottom = draw.textbbox((10, 10), word, font=typeface)
        return image.crop((left - 6, top - 6, right + 6, bottom + 6))

    store = DirectoryStore(tmp_path / "corrections")
    for word in ["Kvothe", "Hrothgar", "Xochitl", "Nkechi", "Bjorkvik", "Dzhokhar"]:
        png = io.BytesIO()
        render(word, "cmsy10.ttf").save(png, "PNG")
        store.put(png.getvalue(), {"text": word, "recognized_text": "?"})
    replay = tmp_path / "replay"
    replay.mkdir()
    words = ["letter", "garden", "Tuesday", "window", "Morning", "pencil", "travel", "Summer"]
    for number, word in enumerate(words):
        render(word, "DejaVuSerif-Italic.ttf").save(replay / f"{number}.png")
    (replay / "labels.tsv").write_text("".join(f"{n}.png\t{w}\n" for n, w in enumerate(words)))

    out = tmp_path / "corrected"
    results = finetune_corrections.main(
        ["--corrections", str(tmp_path / "corrections"), "--replay", str(replay), "--out", str(out), "--steps", "250"]
    )
    # measured: 0 of 6 before (CER 0.95); after 250 steps 6 of 6 (CER 0)
    assert results["before"]["right"] == 0 and results["before"]["cer"] > 0.9, results
    assert results["after"]["right"] >= 5 and results["after"]["cer"] < 0.1, results
    assert results["replay_after"]["right"] >= results["replay_before"]["right"] - 1, results
    assert "Kvothe\t4.0" in (out / "lexicon.tsv").read_text()
    corrected = [crop for _, crop, _ in store.items()]
    texts = [record["text"] for _, _, record in store.items()]
    decoder_alone = [
        r.text for r in Recognizer(out, ctc_weight=0.0).predict([Image.open(io.BytesIO(c)) for c in corrected])
    ]
    assert sum(a == b for a, b in zip(decoder_alone, texts, strict=True)) >= 5, decoder_alone


def test_encoder_input_sets_the_width_scale_alone(tmp_path):
    """`training.encoder_input --width-scale` changes how wide crops are read and nothing else of the model."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from training import encoder_input

    out = tmp_path / "wide"
    encoder_input.main(["--model-dir", str(DEFAULT_RECOGNIZER_DIR), "--width-scale", "1.0", "--out", str(out)])
    shipped = json.loads((DEFAULT_RECOGNIZER_DIR / "config.json").read_text())
    copy = json.loads((out / "config.json").read_text())
    assert shipped["encoder"].pop("width_scale") == 0.9 and copy["encoder"].pop("width_scale") == 1.0
    assert copy == shipped
    crop = Image.new("L", (200, 40), 255)
    shipped_width = load_checkpoint(DEFAULT_RECOGNIZER_DIR).preprocess([crop]).shape[3]
    assert (shipped_width, load_checkpoint(out).preprocess([crop]).shape[3]) == (272, 304)  # 216 and 240 px + 25%
    with pytest.raises(SystemExit):
        encoder_input.main(["--model-dir", str(DEFAULT_RECOGNIZER_DIR), "--out", str(out)])  # neither setting


def test_the_encoder_learns_at_another_input_height_with_its_batch_norms_kept(tmp_path):
    """`training.encoder_input` makes a copy of the shipped model that reads crops 32 px tall (its neck pooling the
    backbone's 2 rows); `Trainer` then trains its encoder at its own learning rate, drawn towards the shipped model's
    states (distillation), while the batch norms keep the statistics they were loaded with (the PP-OCR encoder's,
    learnt from real text)."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from training import encoder_input

    out = tmp_path / "h32"
    encoder_input.write(DEFAULT_RECOGNIZER_DIR, out, height=32)
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.config.encoder.image_height == 32
    assert checkpoint.model.config.encoder.width_scale == 0.9  # the shipped model's, kept
    crop = Image.new("L", (120, 30), 255)
    ImageDraw.Draw(crop).text((8, 8), "ink", fill=0)
    pixels = checkpoint.preprocess([crop])
    assert pixels.shape[2] == 32
    with torch.inference_mode():
        assert checkpoint.model.encoder(pixel_values=pixels).last_hidden_state.shape[1] == pixels.shape[3] // 8
    with pytest.raises(ValueError, match="multiple of 8"):
        encoder_input.write(DEFAULT_RECOGNIZER_DIR, tmp_path / "h36", height=36)

    config = json.loads(Path("training/configs/recognizer_ppocr_h32.json").read_text())
    config["distill_from"] = str(DEFAULT_RECOGNIZER_DIR)
    trainer = train_recognizer.Trainer(checkpoint, config, "cpu")
    # the distillation's distance: none between the teacher and itself, some for the copy reading at 32 px
    teacher = trainer.teacher
    with torch.inference_mode():
        own = teacher.model.encoder(pixel_values=teacher.preprocess([crop]))
        copy = checkpoint.model.encoder(pixel_values=pixels)
    assert float(trainer._distance_to_teacher([crop], own, [own.last_hidden_state.shape[1]])) < 1e-8
    assert float(trainer._distance_to_teacher([crop], copy, [copy.last_hidden_state.shape[1]])) > 0.1
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [
        config["learning_rate"],
        config["encoder_learning_rate"],
    ]
    norms = {name: buffer.clone() for name, buffer in checkpoint.model.named_buffers() if "running" in name}
    weights = {name: p.detach().clone() for name, p in checkpoint.model.encoder.named_parameters()}
    trainer.step([crop, crop.resize((90, 24))], ["ink", "ink"])
    assert norms and all(
        torch.equal(buffer, norms[name]) for name, buffer in checkpoint.model.named_buffers() if name in norms
    )
    assert any(not torch.equal(p, weights[name]) for name, p in checkpoint.model.encoder.named_parameters())
    assert len(Recognizer(out).predict([crop])) == 1


def test_with_the_decoder_frozen_only_the_encoder_learns_from_its_loss(tmp_path):
    """`freeze_decoder` (the cheaper-input recipe, `recognizer_ppocr_h40.json`): the shipped decoder stays as it was
    and in eval mode (no dropout), while its loss still reaches the encoder, which learns."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from training import encoder_input

    out = tmp_path / "h40"
    encoder_input.write(DEFAULT_RECOGNIZER_DIR, out, height=40)
    checkpoint = load_checkpoint(out)
    config = json.loads(Path("training/configs/recognizer_ppocr_h40.json").read_text())
    assert config["freeze_decoder"] and config["distill_from"] == "models/recognizer"
    # the decoder's loss alone: no distillation, no CTC loss
    trainer = train_recognizer.Trainer(checkpoint, {**config, "distill_from": None, "ctc_weight": 0.0}, "cpu")
    model = checkpoint.model
    assert not model.decoder.training and model.encoder.training
    assert all(not p.requires_grad for p in model.decoder.parameters())
    decoder = {name: p.detach().clone() for name, p in model.decoder.named_parameters()}
    encoder = {name: p.detach().clone() for name, p in model.encoder.named_parameters()}
    crop = Image.new("L", (120, 30), 255)
    ImageDraw.Draw(crop).text((8, 8), "ink", fill=0)
    trainer.step([crop, crop.resize((90, 24))], ["ink", "ink"])
    assert all(torch.equal(p, decoder[name]) for name, p in model.decoder.named_parameters())
    assert any(not torch.equal(p, encoder[name]) for name, p in model.encoder.named_parameters())
    trainer.train(True)
    assert not model.decoder.training


def test_make_data_needs_only_the_fonts_of_the_splits_it_renders(monkeypatch, tmp_path):
    """Training pages alone need the training hands alone: the prepared GPU run carries no evaluation hands, and
    that machine cannot reach npm's registry to fetch them."""
    asked = []
    monkeypatch.setattr(make_data, "ensure_fonts", lambda families: asked.append(list(families)) or [])
    monkeypatch.setattr(make_data, "make_split", lambda *args: None)
    monkeypatch.setattr(make_data, "write_yolo_yaml", lambda out: out)
    make_data.main(["--out", str(tmp_path), "--train-pages", "2", "--val-pages", "0"])
    make_data.main(["--out", str(tmp_path), "--train-pages", "0", "--val-pages", "2"])
    make_data.main(["--out", str(tmp_path), "--train-pages", "1", "--val-photos", "1"])
    assert asked == [training_families(), list(EVAL_FAMILIES), training_families() + list(EVAL_FAMILIES)]


def test_training_batches_hold_crops_of_like_widths(tmp_path):
    """Each dataset gives half of the crops whatever its size, but a batch holds crops of like widths: a batch is
    padded to its widest crop, and a word in a batch of lines cost a line's width of computing."""

    def folder(name: str, widths: list[int]) -> list[tuple[Path, str]]:
        (tmp_path / name).mkdir()
        for index, width in enumerate(widths):
            Image.new("L", (width, 20), 255).save(tmp_path / name / f"{index}.png")
        return [(tmp_path / name / f"{index}.png", "x") for index in range(len(widths))]

    words = folder("words", [20 + 5 * i for i in range(30)])
    lines = folder("lines", [400 + 10 * i for i in range(6)])
    draws = train_recognizer.batches([words, lines], 4, random.Random(0), pool=8)
    drawn = [next(draws) for _ in range(400)]
    assert all(len(batch) == 4 for batch in drawn)
    kinds = [{path.parent.name for path, _ in batch} for batch in drawn]
    share = sum(path.parent.name == "lines" for batch in drawn for path, _ in batch) / (4 * len(drawn))
    assert 0.45 < share < 0.55
    # of each 8 batches drawn together, one at most holds words and lines (crop by crop: 7 in 8 would)
    assert sum(len(kind) > 1 for kind in kinds) <= len(drawn) // 8
    # and the batches of a draw come out in random order, not narrowest first
    assert len({index % 8 for index, kind in enumerate(kinds) if kind == {"lines"}}) == 8


def test_real_dev_variants_read_each_sample_as_it_is_and_changed(tmp_path, capsys):
    """`training.real_dev_variants`: each variant changes the image as it says (a paper-coloured margin is the
    paper's colour, not white), and every sample is read as a page under each variant asked for."""
    from training import real_dev_variants

    root = Path(__file__).resolve().parents[1]
    truth = json.loads((root / "samples" / "page.json").read_text())
    page = Image.open(root / "samples" / "page.png").convert("RGB")
    words = truth["words"][:3]
    box = (
        min(w["box"][0] for w in words) - 12,
        min(w["box"][1] for w in words) - 12,
        max(w["box"][2] for w in words) + 12,
        max(w["box"][3] for w in words) + 12,
    )
    line = page.crop(box)
    paper = Image.new("RGB", line.size, (200, 190, 170))
    assert real_dev_variants.VARIANTS["paper-16"](paper).getpixel((0, 0)) == (200, 190, 170)
    assert real_dev_variants.VARIANTS["paper-16"](line).size == (line.width + 32, line.height + 32)
    assert real_dev_variants.VARIANTS["scale-0.5"](line).size == (round(line.width / 2), round(line.height / 2))
    line.save(tmp_path / "line.png")
    (tmp_path / "labels.tsv").write_text("line.png\t" + " ".join(w["text"] for w in words) + "\n")
    real_dev_variants.main(["--real-dev", str(tmp_path), "--variants", "as-is", "white-16"])
    table = capsys.readouterr().out
    rows = {row.split(" | ")[0].strip("| "): row for row in table.splitlines() if row.startswith("| ")}
    assert set(rows) >= {"as-is", "white-16", "mean of 2"}
    assert float(rows["as-is"].split(" | ")[1]) < 0.2  # three printed words, read as a page
