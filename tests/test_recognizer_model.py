"""Recognizer: any TrOCR checkpoint from a local dir, batching, confidence, beam search."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import VisionEncoderDecoderModel

from services.recognizer import compact_trocr
from services.recognizer.checkpoint import load_checkpoint
from services.recognizer.lexicon import _CORE, Lexicon
from services.recognizer.model import Recognition, Recognizer


def crops(count: int) -> list[Image.Image]:
    return [Image.new("L", (30 + 7 * i, 18 + i % 5), 255 - 20 * i) for i in range(count)]


def test_char_tokenizer_round_trips_text():
    tokenizer = compact_trocr.build_char_tokenizer()
    text = 'Hello, World! 12/05/2026 "quoted" (x) 99%'
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_compact_model_saves_and_loads_as_a_vision_encoder_decoder(tiny_recognizer_dir):
    model = VisionEncoderDecoderModel.from_pretrained(tiny_recognizer_dir)
    assert model.config.encoder.model_type == compact_trocr.MODEL_TYPE
    pixels = compact_trocr.prepare_pixels(crops(2), 32, 64)
    assert pixels.shape == (2, 1, 32, 64) and float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0


def test_prepare_pixels_keeps_aspect_and_pads_with_paper():
    wide_ink = Image.new("L", (20, 10), 0)  # all ink, aspect 2:1
    pixels = compact_trocr.prepare_pixels([wide_ink], 32, 128)[0, 0]
    assert float(pixels[:, :64].mean()) > 0.9  # the crop, scaled to 64x32, is ink
    assert float(pixels[:, 70:].max()) == 0.0  # the rest is paper


@pytest.mark.parametrize("fixture", ["tiny_recognizer_dir", "tiny_stock_trocr_dir"])
def test_predicts_one_result_per_crop_in_order(fixture, request):
    recognizer = Recognizer(request.getfixturevalue(fixture), batch_size=3, max_new_tokens=5)
    results = recognizer.predict(crops(7))
    assert len(results) == 7
    assert all(0.0 <= r.confidence <= 1.0 and len(r.text) <= 5 for r in results)
    # batching must not change results: one by one gives the same texts
    assert [recognizer.predict([c])[0].text for c in crops(7)] == [r.text for r in results]
    assert recognizer.predict([]) == []


def test_batches_of_similar_widths_come_back_in_the_order_sent(tiny_recognizer_dir, monkeypatch):
    recognizer = Recognizer(tiny_recognizer_dir, batch_size=2, max_new_tokens=2)
    batches = []

    def by_width(batch, lines):
        batches.append([crop.width for crop in batch])
        return [(Recognition(str(crop.width), 1.0), 0.0) for crop in batch]

    monkeypatch.setattr(recognizer, "_predict_batch", by_width)
    widths = [90, 20, 50, 10, 70]
    assert [r.text for r in recognizer.predict([Image.new("L", (w, 10)) for w in widths])] == list(map(str, widths))
    assert batches == [[10, 20], [50, 70], [90]]


def test_greedy_confidence_is_the_geometric_mean_of_token_probabilities(tiny_recognizer_dir):
    recognizer = Recognizer(tiny_recognizer_dir, max_new_tokens=4)
    crop = crops(1)
    result = recognizer.predict(crop)[0]
    # recompute by teacher-forcing the emitted text through the model
    model, tokenizer = recognizer.model, recognizer.tokenizer
    ids = tokenizer(result.text, add_special_tokens=False).input_ids
    output = model.generate(recognizer.preprocess(crop), max_new_tokens=4, return_dict_in_generate=True)
    generated = output.sequences[0, 1:].tolist()
    eos = model.generation_config.eos_token_id
    emitted = generated[: generated.index(eos) + 1] if eos in generated else generated
    # the text is what was emitted less special tokens (a random model may emit e.g. padding mid-word)
    assert [t for t in emitted if t not in tokenizer.all_special_ids] == ids
    with torch.inference_mode():
        decoder_input = torch.tensor([[model.config.decoder_start_token_id] + emitted[:-1]])
        logits = model(pixel_values=recognizer.preprocess(crop), decoder_input_ids=decoder_input).logits
        log_probs = logits.log_softmax(-1)[0, torch.arange(len(emitted)), torch.tensor(emitted)]
    assert result.confidence == pytest.approx(float(log_probs.mean().exp()), rel=1e-3)


def test_beam_search_setting(tiny_recognizer_dir):
    results = Recognizer(tiny_recognizer_dir, beam_size=3, max_new_tokens=4).predict(crops(2))
    assert len(results) == 2 and all(0.0 <= r.confidence <= 1.0 for r in results)
    with pytest.raises(ValueError):
        Recognizer(tiny_recognizer_dir, beam_size=0)


def test_stock_trocr_uses_its_own_image_processor(tiny_stock_trocr_dir):
    checkpoint = load_checkpoint(tiny_stock_trocr_dir)
    pixels = checkpoint.preprocess(crops(2))
    assert pixels.shape == (2, 3, 32, 32)  # ViT processor: RGB, resized to its size


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Recognizer(tmp_path)


def test_lexicon_prefers_likely_words_but_leaves_the_model_the_last_word(tmp_path):
    path = tmp_path / "lexicon.tsv"
    path.write_text("freedoms\t3.5\nthe\t7.7\n", encoding="utf-8")
    lexicon = Lexicon.load(path)
    # each word's log-probability: its Zipf frequency less 9 (occurrences per billion words), in natural log
    assert lexicon.prior('"Freedoms,"') == pytest.approx(math.log(10) * (3.5 - 9))  # case and punctuation aside
    assert lexicon.prior("treedoms") == pytest.approx(math.log(10) * (lexicon.oov_zipf - 9))
    assert lexicon.prior("719") == lexicon.prior("319") == pytest.approx(math.log(10) * (lexicon.neutral_zipf - 9))
    # a slightly less likely reading that is a word wins over a non-word ...
    assert lexicon.choose([("treedoms", -1.0), ("freedoms", -2.0)]) == 1
    # ... but not when the model is sure, and numbers are the model's call alone
    assert lexicon.choose([("treedoms", -0.1), ("freedoms", -12.0)]) == 0
    assert lexicon.choose([("319", -1.0), ("719", -2.0)]) == 0
    # a word said over and over is no likelier than said once: each word read costs its probability (as a sum of
    # Zipf frequencies, a sheared crop's "As. As As" had beaten "As" by 4.2 where the decoder put it 26 below)
    assert lexicon.choose([("the", -3.0), ("the the the", -29.0)]) == 0
    path.write_text("the 7.7\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lexicon.tsv:1"):
        Lexicon.load(path)


def test_lexicon_chooses_among_the_decoders_n_best(tiny_recognizer_dir):
    crop = crops(1)
    plain = Recognizer(tiny_recognizer_dir, beam_size=5, max_new_tokens=4)
    output = plain.model.generate(
        plain.preprocess(crop),
        num_beams=5,
        num_return_sequences=5,
        max_new_tokens=4,
        length_penalty=1.0,
        early_stopping=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    readings = [t.strip() for t in plain.tokenizer.batch_decode(output.sequences, skip_special_tokens=True)]
    # without any lexicon weight the choice is plain beam search's
    neutral = Recognizer(tiny_recognizer_dir, max_new_tokens=4, lexicon=Lexicon({}, weight=0.0), n_best=5)
    assert neutral.predict(crop)[0].text == plain.predict(crop)[0].text == readings[0]
    # a lexicon that knows only a lower-ranked reading picks it, with that reading's own confidence
    cores = [lexicon_core(r) for r in readings]
    target = next(i for i in range(1, 5) if cores[i] and cores.count(cores[i]) == 1)
    favouring = Recognizer(tiny_recognizer_dir, max_new_tokens=4, lexicon=Lexicon({cores[target]: 50.0}), n_best=5)
    result = favouring.predict(crop)[0]
    assert result.text == readings[target]
    assert result.confidence == pytest.approx(float(output.sequences_scores[target].exp()), rel=1e-4)


def lexicon_core(text: str) -> str:
    return " ".join(_CORE.match(token).group(1).lower() for token in text.split())


def test_lexicon_proposes_near_words_in_the_readings_case_and_punctuation(tmp_path):
    lexicon = Lexicon({"the": 7.7, "then": 6.0, "toe": 3.1, "freedoms": 3.5, "freedom": 4.5})
    assert lexicon.near("tke") == ["the", "toe"]  # one edit for short words ("then" is two), frequent first
    assert lexicon.near('"Tke,"') == ['"The,"', '"Toe,"']
    assert lexicon.near("TREEDOMS") == ["FREEDOMS", "FREEDOM"]  # two edits for longer words
    assert lexicon.near("the") == lexicon.near("The") == []  # known words stay
    assert lexicon.near("319") == lexicon.near("tke tke") == lexicon.near("") == []  # numbers, phrases
    assert lexicon.near("xqzv") == []
    assert Lexicon({"the": 7.7}, max_near=0).near("tke") == []
    assert lexicon.near_many(["tke", "the", '"Tke,"', "319"]) == [["the", "toe"], [], ['"The,"', '"Toe,"'], []]


def test_near_words_of_every_reading_join_the_readings_once(tiny_recognizer_dir):
    lexicon = Lexicon({"the": 7.7, "toe": 3.1, "freedoms": 3.5})
    recognizer = Recognizer(tiny_recognizer_dir, max_new_tokens=10, lexicon=lexicon)
    # "tke" and "tce" both lie one edit from "the" and "toe"; "toe" is already a reading; the fourth
    # reading's near word counts as much as the best one's
    groups = [[("tke", -1.0, 0.5), ("toe", -2.0, 0.3), ("tce", -3.0, 0.1), ("freedomz", -4.0, 0.1)]]
    with torch.inference_mode():
        pixels = recognizer.preprocess(crops(1))
        states = recognizer.model.encoder(pixel_values=pixels).last_hidden_state
        recognizer._add_near_words(recognizer._encoded(states, pixels), groups)
    assert [text for text, _, _ in groups[0][4:]] == ["the", "freedoms"]


@pytest.mark.parametrize("fixture", ["tiny_recognizer_dir", "tiny_stock_trocr_dir"])
def test_near_words_are_scored_by_teacher_forcing(fixture, request):
    recognizer = Recognizer(request.getfixturevalue(fixture), max_new_tokens=6, lexicon=Lexicon({"the": 7.7}))
    pixels = recognizer.preprocess(crops(2))
    groups = [[("tke", -30.0, 0.1)], [("19", -1.0, 0.7)]]  # a decoder's best readings: a non-word, a number
    with torch.inference_mode():
        states = recognizer.model.encoder(pixel_values=pixels).last_hidden_state
        recognizer._add_near_words(recognizer._encoded(states, pixels), groups)
        model, tokenizer = recognizer.model, recognizer.tokenizer
        target = tokenizer("the", add_special_tokens=False).input_ids + [model.generation_config.eos_token_id]
        decoder_input = torch.tensor([[model.generation_config.decoder_start_token_id] + target[:-1]])
        logits = model(pixel_values=pixels[:1], decoder_input_ids=decoder_input).logits
        expected = float(logits.log_softmax(-1)[0, torch.arange(len(target)), torch.tensor(target)].sum())
    assert groups[1] == [("19", -1.0, 0.7)]
    (text, log_prob, confidence) = groups[0][1]
    assert text == "the" and log_prob == pytest.approx(expected, abs=1e-4)
    assert confidence == pytest.approx(math.exp(expected / len(target)), rel=1e-4)
    # the lexicon then picks the word when the image does not rule it out
    assert recognizer.lexicon.choose([(t, lp) for t, lp, _ in groups[0]]) == 1


def test_ctc_alignment_places_each_character_at_its_frame():
    from services.recognizer.compact_trocr import CTC_INDEX
    from services.recognizer.model import CtcScores, _ctc_align

    frames = [0, CTC_INDEX["a"], CTC_INDEX["a"], 0, CTC_INDEX["b"], CTC_INDEX["b"], 0, 0]
    log_probs = np.full((len(frames), len(CTC_INDEX) + 1), -10.0, dtype=np.float32)
    log_probs[range(len(frames)), frames] = 0.0
    assert _ctc_align(log_probs, "ab") == [1, 4]
    assert _ctc_align(log_probs, "a\u00e9") is None  # a character the head cannot read
    scores = CtcScores([torch.from_numpy(log_probs).log_softmax(-1).numpy()])
    assert scores.best_paths == ["ab"]
    # 8 frames over the crop's pixels and its margin; the pixels take 4/5 of them: 6.4 frames
    assert scores.positions(0, "ab", 0.8) == pytest.approx(((1 + 0.5) / 6.4, (4 + 0.5) / 6.4))


def test_the_best_paths_own_frames_are_its_best_alignment():
    """`positions` takes a best path's characters from the path itself (no Viterbi): the same frames as the
    alignment, on random heads' outputs peaked enough to read repeats, doubled letters and spaces; any other text
    is aligned."""
    from services.recognizer.characters import CTC_INDEX
    from services.recognizer.model import CtcScores, _best_path, _ctc_align

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(200, 30, len(CTC_INDEX) + 1)) * 4
    logits[:, :, 1:] -= rng.uniform(0, 8, size=(200, 1, 1))  # more blanks on some, fewer on others
    log_probs = [row - np.log(np.exp(row).sum(-1, keepdims=True)) for row in logits.astype(np.float32)]
    scores = CtcScores(log_probs)
    checked = 0
    for crop, (lp, text) in enumerate(zip(log_probs, scores.best_paths, strict=True)):
        path, frames = _best_path(lp.argmax(-1).tolist())
        if not text or path != text:  # an empty reading, or spaces stripped from its ends: aligned instead
            continue
        checked += 1
        assert frames == _ctc_align(lp, text)
        assert scores.positions(crop, text, 1.0) == tuple(min(1.0, (f + 0.5) / len(lp)) for f in frames)
        if len(text) > 1:  # another reading of the crop: its own alignment
            other = text[:-1]
            expected = tuple(min(1.0, (f + 0.5) / len(lp)) for f in _ctc_align(lp, other))
            assert scores.positions(crop, other, 1.0) == expected
    assert checked > 100
    a, b = CTC_INDEX["a"], CTC_INDEX["b"]
    assert _best_path([0, a, a, 0, a, b]) == ("aab", [1, 4, 5])


def test_ctc_likelihoods_are_torchs_ctc_loss():
    """The CTC head's score of each candidate (numpy: the torch-free serving path has no torch) is torch's CTC loss
    negated, for crops of several lengths at once, repeated letters, unknown characters, and texts too long for
    their crop (impossible: -1e4)."""
    from services.recognizer.characters import CTC_INDEX
    from services.recognizer.model import _ctc_log_likelihoods

    generator = torch.Generator().manual_seed(3)
    crops_log_probs = [
        (3 * torch.randn(t, len(CTC_INDEX) + 1, generator=generator)).log_softmax(-1) for t in (9, 4, 30)
    ]
    cases = [
        (0, "ab"),
        (0, "aab"),
        (1, "see"),
        (1, "abcde"),
        (1, "aaaa"),
        (2, "hello world"),
        (2, "\u00e9t\u00e9"),
        (0, ""),
        (1, "x"),
    ]
    got = _ctc_log_likelihoods([crops_log_probs[c].numpy() for c, _ in cases], [text for _, text in cases])
    for (crop, text), value in zip(cases, got, strict=True):
        target = [CTC_INDEX[c] for c in text if c in CTC_INDEX] or [CTC_INDEX[" "]]
        loss = torch.nn.functional.ctc_loss(
            crops_log_probs[crop], torch.tensor(target), [len(crops_log_probs[crop])], [len(target)], reduction="sum"
        )
        expected = -float(loss) if math.isfinite(float(loss)) else -1e4
        assert value == pytest.approx(expected, abs=1e-3), (crop, text)
    assert got[3] == got[4] == -1e4  # 5 characters, or "a" blank "a" blank "a" blank "a", in 4 frames


def test_the_onnx_backend_reads_as_torch_on_the_shipped_model(sample_page):
    """The shipped model's encoder and decoder under ONNX Runtime (the default backend): same readings, same
    confidences, whatever the batch's widths (the graph's batch and width are dynamic, padding masked)."""
    from services.common import geometry
    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon

    truth = json.loads(sample_page.with_suffix(".json").read_text())
    gray = Image.open(sample_page).convert("L")
    lines = [geometry.union(tuple(w["box"]) for w in truth["words"][i : i + 6]) for i in (0, 30)]
    page_crops = [cut_crop(gray, tuple(w["box"])) for w in truth["words"][:40]] + [cut_crop(gray, b) for b in lines]
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    # torch reads each batch of 16 whole; ONNX Runtime encodes ENCODER_BATCH_SIZE crops at a time
    on_torch = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, backend="torch", batch_size=16)
    on_onnx = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, backend="onnx", batch_size=16)
    assert on_onnx.backend == "onnx" and on_torch.backend == "torch"
    assert on_onnx.onnx_encoder is not None and on_onnx.onnx_decoder is not None
    expected, got = on_torch.predict(page_crops), on_onnx.predict(page_crops)
    assert [r.text for r in got] == [r.text for r in expected]
    assert max(abs(a.confidence - b.confidence) for a, b in zip(got, expected, strict=True)) < 1e-3
    # the decoder reading several encoder batches at once (their columns padded and masked) reads as each alone,
    # on one worker thread or several
    for workers in (1, 3):
        joined = Recognizer(
            DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, batch_size=32, encoder_batch_size=4, workers=workers
        )
        assert joined.workers == workers
        got = joined.predict(page_crops)
        assert [r.text for r in got] == [r.text for r in expected]
        assert max(abs(a.confidence - b.confidence) for a, b in zip(got, expected, strict=True)) < 1e-3


def test_a_crop_reads_the_same_whatever_is_read_with_it(sample_page):
    """The decoder attends to a crop's own encoder columns, not to the padding its batch gives it: a crop reads the
    same alone and beside wider crops (other pages' crops, under load), in ONNX Runtime (its decoder in float32 and
    in int8: each activation row scaled on its own) and in torch. (Before, a confidence on the sample page moved by
    up to 0.25 between encoder batches of 1 and 32.)"""
    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon

    truth = json.loads(sample_page.with_suffix(".json").read_text())
    gray = Image.open(sample_page).convert("L")
    crops = sorted((cut_crop(gray, tuple(w["box"])) for w in truth["words"]), key=lambda c: c.width / c.height)
    crops = crops[:: max(1, len(crops) // 12)]  # narrow to wide
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    for backend, decoder in (("onnx", "float32"), ("onnx", "int8"), ("torch", "float32")):
        options = dict(lexicon=lexicon, backend=backend, decoder_dtype=decoder)
        alone = Recognizer(DEFAULT_RECOGNIZER_DIR, batch_size=1, **options)
        together = Recognizer(DEFAULT_RECOGNIZER_DIR, batch_size=32, encoder_batch_size=32, **options)
        expected = [alone.predict([crop])[0] for crop in crops]
        got = together.predict(crops)
        assert [r.text for r in got] == [r.text for r in expected]
        # (in int8 the encoder's float noise between batch sizes, about 1e-6, can move an activation across a
        # rounding step: 3e-4 here; scaling a whole batch at once instead moved a confidence by 1.5e-3)
        tolerance = 1e-3 if decoder == "int8" else 1e-4
        assert max(abs(a.confidence - b.confidence) for a, b in zip(got, expected, strict=True)) < tolerance, decoder


def test_training_decodes_each_crop_on_its_own_columns_as_serving_does(sample_page):
    """`own_columns`, as `train_recognizer` calls the model for its loss: a crop's logits in a batch padded to a wider
    crop are its logits alone."""
    from transformers.modeling_outputs import BaseModelOutput

    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.checkpoint import own_columns

    checkpoint = load_checkpoint(DEFAULT_RECOGNIZER_DIR)
    model = checkpoint.model.eval()
    truth = json.loads(sample_page.with_suffix(".json").read_text())
    gray = Image.open(sample_page).convert("L")
    crops = sorted((cut_crop(gray, tuple(w["box"])) for w in truth["words"][:20]), key=lambda c: c.width / c.height)
    labels = torch.tensor([[5, 6, 7, 2], [8, 9, 10, 2]])

    def logits(batch: list) -> torch.Tensor:
        pixels = checkpoint.preprocess(batch)
        with torch.inference_mode():
            states = model.encoder(pixel_values=pixels).last_hidden_state
            width = states.shape[1]
            with own_columns(model, model.encoder.owned_columns(pixels, width), width):
                outputs = model(encoder_outputs=BaseModelOutput(last_hidden_state=states), labels=labels[: len(batch)])
        return outputs.logits

    alone, padded = logits([crops[0]]), logits([crops[0], crops[-1]])
    assert torch.allclose(alone[0], padded[0], atol=1e-4)
    with torch.inference_mode():  # (without the mask the padding is read)
        pixels = checkpoint.preprocess([crops[0], crops[-1]])
        states = model.encoder(pixel_values=pixels).last_hidden_state
        unmasked = model(encoder_outputs=BaseModelOutput(last_hidden_state=states), labels=labels).logits
    assert not torch.allclose(alone[0], unmasked[0], atol=1e-4)


def test_training_and_serving_read_the_shipped_models_crops_at_its_width_scale():
    """The shipped config reads crops at 0.9 of their aspect's width; the service and training (`load_checkpoint`,
    as `train_recognizer` loads a model) make the same pixels."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer import ppocr_pixels

    config = json.loads((DEFAULT_RECOGNIZER_DIR / "config.json").read_text())["encoder"]
    assert config["width_scale"] == 0.9
    batch = [Image.new("L", (200, 40), 255), Image.new("L", (60, 30), 90)]
    expected = ppocr_pixels.prepare_pixels(batch, 48, 1600, 0.9)
    assert expected.shape[3] == 8 * math.ceil(216 * 1.25 / 8)  # 200x40 -> 240x48, 0.9 of it: 216 px
    assert np.array_equal(load_checkpoint(DEFAULT_RECOGNIZER_DIR).preprocess(batch).numpy(), expected)
    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR)
    assert np.array_equal(np.asarray(recognizer.preprocess(batch)), expected)
    full = ppocr_pixels.prepare_pixels(batch, 48, 1600)
    assert not np.array_equal(full, expected)
    # whole lines (the orchestrator's line unit) are read at their full width: the spaces between words stay
    assert np.array_equal(np.asarray(recognizer.preprocess(batch, True)), full)
    assert recognizer._content_fraction(batch[0], True) == 240 / 304
    assert recognizer._content_fraction(batch[0], False) == 216 / 272
    # training (`Trainer.step`, train_recognizer's evaluation) tells its line crops by their folder, as make_data
    # writes them, and reads them so too: a batch of a word and a line, each at its width
    from training.train_recognizer import is_line

    assert is_line(Path("data/synth/recognizer-lines/train/1.png"))
    assert not is_line(Path("data/synth/recognizer/train/1.png"))
    mixed = load_checkpoint(DEFAULT_RECOGNIZER_DIR).preprocess(batch, [False, True]).numpy()
    assert (mixed[:, 0, 0, :] != ppocr_pixels.PADDING).sum(axis=1).tolist() == [272, 120]  # 216 px, 60x30 -> 96 px
    assert np.array_equal(mixed[1, :, :, :120], full[1, :, :, :120])


def test_word_crops_and_lines_read_in_one_call_as_each_alone(sample_page):
    """A model call of several requests may hold word crops and whole lines: each is read at its own width, as it
    is read alone; the service hands each crop's request flag (`RecognizeRequest.lines`) to the model."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR, RecognizerSettings
    from services.recognizer.server import RecognizerServicer

    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR)
    crops = _page_crops(sample_page, 4)
    flags = [False, True, False, True]
    together = recognizer.predict(crops, flags)
    alone = [recognizer.predict([crop], flag)[0] for crop, flag in zip(crops, flags, strict=True)]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.confidence for r in together] == pytest.approx([r.confidence for r in alone], abs=1e-4)
    assert recognizer.predict(crops[1:2], True)[0].char_positions != recognizer.predict(crops[1:2])[0].char_positions

    servicer = RecognizerServicer(RecognizerSettings())
    servicer.recognizer = recognizer
    served = servicer.runner.function(list(zip(crops, flags, strict=True)))
    assert [(r.text, r.char_positions) for r in served] == [(r.text, r.char_positions) for r in together]


def test_a_small_call_is_shared_among_the_workers(tiny_recognizer_dir):
    """A call of fewer crops than the workers' encoder batches (the second, upright reading of a few slanted crops)
    is read on every worker, not on one while the others wait."""
    recognizer = Recognizer(tiny_recognizer_dir, max_new_tokens=2, workers=2, encoder_batch_size=8)
    sizes = []
    read = recognizer._predict_batch
    recognizer._predict_batch = lambda batch, lines: (sizes.append(len(batch)), read(batch, lines))[1]
    recognizer.predict(crops(3))
    assert sorted(sizes) == [1, 2]
    sizes.clear()
    recognizer.predict(crops(40))  # five encoder batches of 8, on two workers
    assert sorted(sizes) == [16, 24]


def test_other_encoders_stay_on_torch_and_trocr_decoders_go_to_onnx(tiny_recognizer_dir):
    recognizer = Recognizer(tiny_recognizer_dir, max_new_tokens=2, backend="onnx")
    assert recognizer.onnx_encoder is None and recognizer.onnx_decoder is not None
    assert Recognizer(tiny_recognizer_dir, max_new_tokens=2, backend="torch").onnx_decoder is None
    with pytest.raises(ValueError):
        Recognizer(tiny_recognizer_dir, backend="tensorrt")


def test_on_a_gpu_the_onnx_backend_leaves_every_part_of_the_model_to_torch():
    """The onnxruntime package serves CPUs: with a GPU (here the meta device stands in for one: no memory, no
    GPU needed) the shipped model's encoder, nine tenths of a page's work, must not run on ONNX Runtime's CPU
    provider beside an idle GPU. (It did: only the decoder and the detector checked the device.)"""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR

    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, device="meta", backend="onnx")
    assert (recognizer.backend, recognizer.onnx_encoder, recognizer.onnx_decoder) == ("torch", None, None)
    assert next(recognizer.model.parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="on a CPU"):
        Recognizer(DEFAULT_RECOGNIZER_DIR, device="meta", encoder_onnx="encoder.onnx")


def test_half_precision_where_torch_runs_the_model_reads_as_float32(sample_page):
    """HW_DTYPE for GPUs (float16, bfloat16): checked here in bfloat16 on the CPU, where torch runs it natively; the
    scores (CTC, candidates, confidences) are computed in float32 whatever the model runs in."""
    import torch

    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon

    crops = _page_crops(sample_page, 24)
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    full = Recognizer(DEFAULT_RECOGNIZER_DIR, backend="torch", lexicon=lexicon, workers=1)
    half = Recognizer(DEFAULT_RECOGNIZER_DIR, backend="torch", lexicon=lexicon, workers=1, dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    expected, got = full.predict(crops), half.predict(crops)
    assert sum(a.text == b.text for a, b in zip(expected, got, strict=True)) >= 23
    assert max(abs(a.confidence - b.confidence) for a, b in zip(expected, got, strict=True)) < 0.1
    with pytest.raises(ValueError, match="torch backend"):  # ONNX Runtime runs the float32 graphs
        Recognizer(DEFAULT_RECOGNIZER_DIR, dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        Recognizer(DEFAULT_RECOGNIZER_DIR, backend="torch", dtype="int4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: none here or in CI; run it where one is")
def test_on_a_gpu_the_page_reads_as_on_the_cpu_in_float32_and_float16(sample_page):
    """The GPU path (torch on the device; CTC work on the CPU) has no machine in CI: this runs where a GPU is."""
    from PIL import Image as PilImage

    from services.common.settings import DEFAULT_DETECTOR_WEIGHTS, DEFAULT_RECOGNIZER_DIR
    from services.detector.model import Detector
    from services.recognizer.lexicon import find_lexicon

    page = PilImage.open(sample_page).convert("RGB")
    detector = Detector(DEFAULT_DETECTOR_WEIGHTS, device="cuda")
    found, expected_boxes = detector.predict(page), Detector(DEFAULT_DETECTOR_WEIGHTS).predict(page)
    assert detector.backend == "torch" and len(found) == len(expected_boxes)
    for a, b in zip(found, expected_boxes, strict=True):
        assert max(abs(x - y) for x, y in zip(a.box, b.box, strict=True)) < 1.0
    crops = _page_crops(sample_page, 40)
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    expected = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon).predict(crops)
    for dtype, least in (("float32", 40), ("float16", 38)):
        got = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, device="cuda", dtype=dtype).predict(crops)
        assert sum(a.text == b.text for a, b in zip(got, expected, strict=True)) >= least, dtype
        assert all(len(r.char_positions) == len(r.text) for r in got if r.text)


def _page_crops(sample_page, count: int) -> list[Image.Image]:
    from services.common.crops import cut_crop

    truth = json.loads(sample_page.with_suffix(".json").read_text())
    gray = Image.open(sample_page).convert("L")
    return [cut_crop(gray, tuple(w["box"])) for w in truth["words"][:count]]


def test_slant_is_measured_and_undone(sample_page):
    from services.recognizer import slant

    for crop in _page_crops(sample_page, 8):
        native = slant.estimate_shear(crop)
        leaning, added = slant.shear_crop(crop, -0.5)  # tops 0.5 x height to the right of the bottoms
        assert leaning.size == (crop.width + math.ceil(0.5 * crop.height), crop.height)
        assert added == leaning.width - crop.width
        measured = slant.estimate_shear(leaning)
        assert measured == pytest.approx(native + 0.5, abs=0.25)  # a rough measure on 20-35 px words
        upright, _ = slant.shear_crop(leaning, measured)
        assert abs(slant.estimate_shear(upright)) <= 0.25
    assert slant.estimate_shear(Image.new("L", (80, 30), 230)) == 0.0  # no ink: nothing to measure


def test_unsure_slanted_crops_keep_the_better_of_two_readings(sample_page):
    """With `deslant_below`, a crop read with a confidence under it whose ink leans is read again sheared
    upright, and whichever reading scores better stays, its character positions mapped back onto the crop."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer import slant
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.model import MIN_SLANT

    leaning = [slant.shear_crop(crop, -0.7)[0] for crop in _page_crops(sample_page, 24)]
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    once = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, deslant_below=0)
    always = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, deslant_below=1.01)
    first = once._read(leaning, [False] * len(leaning))
    shears = [slant.estimate_shear(crop) for crop in leaning]
    assert all(abs(shear) >= MIN_SLANT for shear in shears)
    upright = [slant.shear_crop(crop, shear) for crop, shear in zip(leaning, shears, strict=True)]
    second = once._read([image for image, _ in upright], [False] * len(upright))
    got = always.predict(leaning)
    assert [r.text for r in once.predict(leaning)] == [r.text for r, _ in first]  # 0: one reading
    kept_second = 0
    for (a, score_a), (b, score_b), result, crop in zip(first, second, got, leaning, strict=True):
        winner = b if score_b > score_a else a
        kept_second += score_b > score_a
        assert (result.text, result.confidence) == (winner.text, winner.confidence)
        assert all(0.0 <= x <= 1.0 for x in result.char_positions)
        assert list(result.char_positions) == sorted(result.char_positions)
        if winner is b and a.text == b.text and a.char_positions and result.char_positions:
            # the same characters, found on the leaning crop and on the upright one: about the same places
            offsets = [abs(x - y) * crop.width for x, y in zip(a.char_positions, result.char_positions, strict=True)]
            assert max(offsets) < 0.5 * crop.height
    assert 0 < kept_second < len(leaning)


@pytest.mark.parametrize("fixture", ["tiny_recognizer_dir", "tiny_stock_trocr_dir"])
def test_the_onnx_decoder_searches_and_scores_as_generate_does(fixture, request):
    """Greedy search with cached keys and values on ONNX Runtime: the tokens and log-probabilities of
    `generate` + `compute_transition_scores`, and teacher forcing gives the torch decoder's logits."""
    recognizer = Recognizer(request.getfixturevalue(fixture), max_new_tokens=6, backend="onnx")
    model, decoder = recognizer.model, recognizer.onnx_decoder
    pixels = recognizer.preprocess(crops(5))
    with torch.inference_mode():
        states = model.encoder(pixel_values=pixels).last_hidden_state
        output = model.generate(pixels, max_new_tokens=6, output_scores=True, return_dict_in_generate=True)
        expected = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        sequences, log_probs, _ = decoder.greedy(decoder.cross(states.numpy()), 6)
        assert sequences.tolist() == output.sequences.tolist()
        emitted = recognizer._emitted(output.sequences[:, 1:])
        assert torch.allclose(torch.from_numpy(log_probs).float()[emitted], expected[emitted], atol=1e-4)
        logits = model(pixel_values=pixels, decoder_input_ids=output.sequences).logits
        forced = decoder.logits(decoder.cross(states.numpy()), output.sequences.numpy())
        assert torch.allclose(torch.from_numpy(forced), logits, atol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_recognizer_dir", "tiny_stock_trocr_dir", "sample_page"])
def test_the_onnx_decoder_beam_searches_as_generate_does(fixture, request):
    """Beam search with cached keys and values on ONNX Runtime: `generate`'s sequences, in its order, and its
    sequence scores, for several beam widths, n-best counts and lengths (a short one stops beams at the length cap),
    on tiny decoders and on the shipped model with each crop on its own columns."""
    if fixture == "sample_page":
        from services.common.settings import DEFAULT_RECOGNIZER_DIR

        recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, backend="onnx")
        images = _page_crops(request.getfixturevalue(fixture), 24)
    else:
        recognizer, images = Recognizer(request.getfixturevalue(fixture), backend="onnx"), crops(6)
    model, decoder = recognizer.model, recognizer.onnx_decoder
    pixels = recognizer.preprocess(images)
    with torch.inference_mode():
        states = model.encoder(pixel_values=torch.as_tensor(pixels)).last_hidden_state
    encoded = recognizer._encoded(states.numpy(), pixels)
    for beams, n_best, longest in [(3, 3, 20), (5, 2, 20), (4, 1, 3)]:
        max_new_tokens = min(longest, recognizer.max_new_tokens)  # (within the decoder's positions)
        sequences, scores = decoder.beam(encoded.cross, max_new_tokens, beams, n_best)
        expected, _, expected_scores = recognizer.torch.generate(
            pixels, states, max_new_tokens, beams, n_best, encoded.columns
        )
        assert sequences.tolist() == expected.tolist()
        assert np.allclose(scores, expected_scores, atol=1e-4)


def test_greedy_search_checked_against_drafts_finds_what_greedy_search_finds(sample_page, monkeypatch):
    """Drafts (the service passes the CTC head's readings) that greedy search would emit, or emit the start of and
    end, are taken after one teacher-forced check; the other rows (a wrong draft, an empty one, one longer than the
    search may go) are searched step by step: the same tokens and log-probabilities as without drafts."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR

    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, workers=1)
    decoder = recognizer.onnx_decoder
    hidden, _ = recognizer.onnx_encoder(recognizer.preprocess(_page_crops(sample_page, 12)))
    cross = decoder.cross(hidden)
    expected, expected_log_probs, unchecked = decoder.greedy(cross, 20)
    emitted = recognizer._emitted(expected[:, 1:])
    own = [
        [int(t) for t, e in zip(row[1:], keep, strict=True) if e and t != decoder.eos]
        for row, keep in zip(expected, emitted, strict=True)
    ]
    assert all(own)
    drafts = [list(tokens) for tokens in own]
    drafts[1] = [own[1][0] + 1, *own[1][1:]]  # a wrong first character
    drafts[2] = []  # nothing read
    drafts[3] = [*own[3], *[own[3][0]] * 20]  # longer than the search may go
    drafts[4] = [*own[4], own[4][0]]  # one letter too many: greedy search ends before it (taken, not searched)
    searched = []
    search = decoder._greedy
    monkeypatch.setattr(decoder, "_greedy", lambda rows, steps: searched.append(len(rows)) or search(rows, steps))
    sequences, log_probs, draft_log_probs = decoder.greedy(cross, 20, drafts)
    assert searched == [3]
    assert sequences.shape == expected.shape and (sequences[:, 1:][emitted] == expected[:, 1:][emitted]).all()
    assert np.abs(log_probs[emitted] - expected_log_probs[emitted]).max() < 1e-4
    # the check scores every draft it checked (the recognizer's CTC candidates are not scored again)
    assert unchecked == [None] * 12 and draft_log_probs[3] is None
    assert draft_log_probs[0] == pytest.approx(expected_log_probs[0][emitted[0]].sum(), abs=1e-4)
    assert draft_log_probs[1] < draft_log_probs[0] - 1  # a wrong first letter is unlikely


def test_an_int8_encoder_from_quantize_encoder_serves_through_encoder_onnx(sample_page, tmp_path):
    """training.quantize_encoder's default graph (1x1 convolutions in int8, ranges calibrated on crops) loaded the
    way the service's HW_ENCODER_ONNX loads it: it reads the page's words nearly as the float encoder does."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from training.quantize_encoder import calibration_crops, quantize

    page_crops = _page_crops(sample_page, 40)
    folder = tmp_path / "crops"  # a make_data crop folder (labels.tsv has no header): every crop can be drawn
    folder.mkdir()
    for i, crop in enumerate(page_crops[:16]):
        crop.save(folder / f"{i}.png")
    (folder / "labels.tsv").write_text("".join(f"{i}.png\tword\n" for i in range(16)))
    drawn = calibration_crops(folder, 16)
    assert sorted(crop.tobytes() for crop in drawn) == sorted(crop.tobytes() for crop in page_crops[:16])
    graph = tmp_path / "encoder-int8.onnx"
    quantize(DEFAULT_RECOGNIZER_DIR, graph, "static-pointwise", drawn)
    expected = [r.text for r in Recognizer(DEFAULT_RECOGNIZER_DIR, deslant_below=0).predict(page_crops)]
    got = [r.text for r in Recognizer(DEFAULT_RECOGNIZER_DIR, deslant_below=0, encoder_onnx=graph).predict(page_crops)]
    assert sum(a == b for a, b in zip(got, expected, strict=True)) >= 0.85 * len(expected)
    with pytest.raises(ValueError):
        Recognizer(DEFAULT_RECOGNIZER_DIR, backend="torch", encoder_onnx=graph)


def test_openvino_runs_the_encoder_graph_as_onnx_runtime_and_in_bfloat16_nearly_so(sample_page):
    """`OpenVinoEncoder` (HW_DTYPE=bfloat16 on a CPU) runs the exported graph: in float32 it gives ONNX Runtime's
    outputs, on a padded batch called from two threads at once (one infer request each); in bfloat16 (where the
    CPU has it) the CTC head's best character at each of a crop's own columns is nearly always the same, and the
    states are within 6% of float32's (relative L2; 3% measured: while the graph's masks were fractions of the
    width, OpenVINO computed them in bfloat16 too, cut crops a column off, and the states were 13.5% off)."""
    from concurrent.futures import ThreadPoolExecutor

    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer import ppocr_pixels
    from services.recognizer.onnx_encoder import OnnxEncoder, OpenVinoEncoder
    from services.recognizer.onnx_export import encoder_graph

    graph = encoder_graph(load_checkpoint(DEFAULT_RECOGNIZER_DIR).model.encoder)
    crops = _page_crops(sample_page, 24)
    batches = [ppocr_pixels.prepare_pixels(crops[i : i + 8], 48, 1600) for i in (0, 8, 16)]
    assert all((batch == ppocr_pixels.PADDING).any() for batch in batches)  # padded: the masks are exercised
    expected = [OnnxEncoder(graph)(batch) for batch in batches]
    full = OpenVinoEncoder(graph, streams=2, precision="f32")
    assert full.precision == "f32"
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(full, batches))
    for (hidden, ctc), (ov_hidden, ov_ctc) in zip(expected, got, strict=True):
        assert np.abs(hidden - ov_hidden).max() < 2e-3 and np.abs(ctc - ov_ctc).max() < 2e-3
    half = OpenVinoEncoder(graph)
    assert half.precision in ("bf16", "f32")  # f32 where the CPU has no bfloat16
    same = total = 0
    errors = references = 0.0
    for batch, (hidden, ctc) in zip(batches, expected, strict=True):
        own = ppocr_pixels.owned_columns(batch, ctc.shape[1])
        half_hidden, half_ctc = half(batch)
        errors += float(((half_hidden - hidden) ** 2).sum())
        references += float((hidden**2).sum())
        best = half_ctc.argmax(-1)
        for row, columns in enumerate(own):
            same += int((best[row, :columns] == ctc[row, :columns].argmax(-1)).sum())
            total += columns
    assert same >= 0.97 * total
    assert (errors / references) ** 0.5 < 0.06


def test_bfloat16_without_openvino_says_what_to_install(monkeypatch):
    import sys

    from services.recognizer.onnx_encoder import OpenVinoEncoder

    monkeypatch.setitem(sys.modules, "openvino", None)  # as where it is not installed
    with pytest.raises(RuntimeError, match="pip install openvino"):
        OpenVinoEncoder(b"")


def test_bfloat16_on_a_cpu_reads_the_page_nearly_as_float32(sample_page, tiny_recognizer_dir):
    """HW_DTYPE=bfloat16 with the onnx backend on a CPU: the encoder on OpenVINO, the decoder on ONNX Runtime."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.onnx_decoder import OnnxDecoder
    from services.recognizer.onnx_encoder import OpenVinoEncoder

    crops = _page_crops(sample_page, 40)
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    half = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, dtype="bfloat16")
    assert isinstance(half.onnx_encoder, OpenVinoEncoder) and isinstance(half.onnx_decoder, OnnxDecoder)
    expected = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon).predict(crops)
    got = half.predict(crops)
    assert sum(a.text == b.text for a, b in zip(expected, got, strict=True)) >= 0.95 * len(crops)
    # confidences move a little (the sample page: median 0.004, a short word's up to 0.16)
    assert np.median([abs(a.confidence - b.confidence) for a, b in zip(expected, got, strict=True)]) < 0.02
    with pytest.raises(ValueError, match="without an encoder graph"):
        Recognizer(DEFAULT_RECOGNIZER_DIR, dtype="bfloat16", encoder_onnx="encoder-int8.onnx")
    with pytest.raises(ValueError, match="PP-OCR encoder"):  # other encoders run in torch: its backend does it
        Recognizer(tiny_recognizer_dir, dtype="bfloat16")


TORCH_FREE_READER = """
import json, sys
sys.modules["torch"] = None  # as where torch is not installed (the CPU images): `import torch` fails
from PIL import Image
from services.common.crops import cut_crop
from services.recognizer.lexicon import find_lexicon
from services.recognizer.model import Recognizer

folder, page, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
truth = json.loads(open(page.rsplit(".", 1)[0] + ".json").read())
gray = Image.open(page).convert("L")
crops = [cut_crop(gray, tuple(w["box"])) for w in truth["words"][:count]]
recognizer = Recognizer(folder, lexicon=find_lexicon(folder))
assert recognizer.model is None and recognizer.backend == "onnx"
try:
    Recognizer(sys.argv[4])  # the weights alone: no graphs to serve, no torch to export them with
except RuntimeError as error:
    assert "onnx_export" in str(error)
else:
    raise AssertionError("a folder without graphs loaded without torch")
print(json.dumps([r.text for r in Recognizer(folder, dtype="bfloat16").predict(crops)]))  # OpenVINO, no torch
int8 = Recognizer(folder, lexicon=find_lexicon(folder), decoder_dtype="int8")  # quantised with onnx, no torch
print(json.dumps([r.text for r in int8.predict(crops)]))
beam = Recognizer(folder, lexicon=find_lexicon(folder), beam_size=3, n_best=3)  # beam search, no torch
print(json.dumps([r.text for r in beam.predict(crops)]))
print(json.dumps([[r.text, r.confidence, list(r.char_positions)] for r in recognizer.predict(crops)]))
"""


def test_a_serving_folder_reads_as_the_weights_do_without_torch(sample_page, tmp_path):
    """`onnx_export.write_serving_folder` (what the CPU image runs at build): the model's folder with its graphs,
    read by a process where torch cannot be imported, gives the page's words the weights give here; graphs of
    other weights are refused."""
    import subprocess
    import sys

    from services.common import onnx_sessions
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer import onnx_bundle
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.onnx_export import write_serving_folder

    folder = tmp_path / "recognizer"
    write_serving_folder(DEFAULT_RECOGNIZER_DIR, folder)
    count = 40
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            TORCH_FREE_READER,
            str(folder),
            str(sample_page),
            str(count),
            str(DEFAULT_RECOGNIZER_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    *_, in_bfloat16, in_int8, in_beams, line = run.stdout.strip().splitlines()
    got = json.loads(line)
    int8 = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), decoder_dtype="int8")
    assert json.loads(in_int8) == [r.text for r in int8.predict(_page_crops(sample_page, count))]
    beam = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), beam_size=3, n_best=3)
    assert json.loads(in_beams) == [r.text for r in beam.predict(_page_crops(sample_page, count))]
    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR))
    expected = recognizer.predict(_page_crops(sample_page, count))
    bare = Recognizer(DEFAULT_RECOGNIZER_DIR).predict(_page_crops(sample_page, count))
    assert sum(a == b.text for a, b in zip(json.loads(in_bfloat16), bare, strict=True)) >= 0.95 * count
    assert [text for text, _, _ in got] == [r.text for r in expected]
    assert max(abs(confidence - r.confidence) for (_, confidence, _), r in zip(got, expected, strict=True)) < 1e-4
    for (_, _, positions), r in zip(got, expected, strict=True):
        assert positions == pytest.approx(r.char_positions)

    meta = folder / onnx_sessions.GRAPHS_FOLDER / "onnx.json"
    meta.write_text(meta.read_text().replace(onnx_sessions.file_digest(folder / onnx_bundle.WEIGHTS), "0" * 64))
    with pytest.raises(ValueError, match="other weights"):
        Recognizer(folder)


def test_an_int8_decoder_reads_the_page_as_float32_does(sample_page, tiny_recognizer_dir):
    """HW_DECODER_DTYPE=int8, the service's default: the decoder's graphs with their products of a weight in int8
    (`onnx_decoder.quantized`, at start) read the sample page's words as the float32 graphs do. (That a crop reads
    the same in any batch in int8: `test_a_crop_reads_the_same_whatever_is_read_with_it`.)"""
    import onnx

    from services.common.settings import DEFAULT_RECOGNIZER_DIR, RecognizerSettings
    from services.recognizer import onnx_decoder
    from services.recognizer.lexicon import find_lexicon
    from services.recognizer.onnx_export import graphs

    assert RecognizerSettings().decoder_dtype == "int8"
    lexicon = find_lexicon(DEFAULT_RECOGNIZER_DIR)
    float32 = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon)
    int8 = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=lexicon, decoder_dtype="int8")
    assert (float32.decoder_dtype, int8.decoder_dtype) == ("float32", "int8")
    # the graph int8 runs: every product with a weight in int8 (those of two activations, attention's, stay), in a
    # third of the float32 graph's bytes
    step = graphs(float32.model, encoder=False).step
    quantized = onnx_decoder.quantized(step)
    plain, weights = onnx.load_from_string(step).graph, {w.name for w in onnx.load_from_string(step).graph.initializer}
    products = sum(node.op_type == "MatMul" and node.input[1] in weights for node in plain.node)
    assert products >= 8 * float32.onnx_decoder.layers  # attention's 6 and the feed-forward's 2 a layer
    assert sum(node.op_type == "MatMulInteger" for node in onnx.load_from_string(quantized).graph.node) == products
    assert len(quantized) < 0.3 * len(step)
    crops = _page_crops(sample_page, 85)
    expected, got = float32.predict(crops), int8.predict(crops)
    # the sample page here: all 85 words the same, confidences a median 0.003 apart (at most 0.05)
    assert sum(a.text == b.text for a, b in zip(expected, got, strict=True)) >= 0.95 * len(crops)
    moved = [abs(a.confidence - b.confidence) for a, b in zip(expected, got, strict=True)]
    assert 0 < np.median(moved) < 0.01  # (0: the float32 graphs ran)
    # where torch runs the decoder (a GPU; other decoders), it runs in the model's type whatever this says
    in_torch = Recognizer(DEFAULT_RECOGNIZER_DIR, backend="torch", decoder_dtype="int8", workers=1)
    assert in_torch.onnx_decoder is None and in_torch.decoder_dtype == "float32"
    with pytest.raises(ValueError, match="decoder_dtype must be one of int8, float32"):
        Recognizer(tiny_recognizer_dir, decoder_dtype="int4")


def test_auto_dtype_runs_the_encoder_in_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    """HW_DTYPE=auto, the service's default: the PP-OCR encoder on OpenVINO in bfloat16 on a CPU that has it,
    float32 on ONNX Runtime on one that has not, and float32 wherever torch runs the model or a graph is given."""
    from services.common.settings import DEFAULT_RECOGNIZER_DIR, RecognizerSettings
    from services.recognizer import model as recognizer_model
    from services.recognizer.onnx_encoder import OnnxEncoder, OpenVinoEncoder, native_bfloat16

    assert RecognizerSettings().dtype == "auto"
    assert isinstance(native_bfloat16(), bool)
    monkeypatch.setattr(recognizer_model, "native_bfloat16", lambda: True)
    native = Recognizer(DEFAULT_RECOGNIZER_DIR, dtype="auto", workers=1)
    assert native.dtype == "bfloat16" and isinstance(native.onnx_encoder, OpenVinoEncoder)
    in_torch = Recognizer(DEFAULT_RECOGNIZER_DIR, dtype="auto", backend="torch", workers=1)
    assert in_torch.dtype == "float32" and next(in_torch.model.parameters()).dtype == torch.float32
    monkeypatch.setattr(recognizer_model, "native_bfloat16", lambda: False)
    without = Recognizer(DEFAULT_RECOGNIZER_DIR, dtype="auto", workers=1)
    assert without.dtype == "float32" and isinstance(without.onnx_encoder, OnnxEncoder)


def test_a_word_crop_read_as_several_words_is_read_again_at_its_full_width(sample_page):
    """A box around two words, sent as a word crop, reads with a space: it is read a second time at its full width
    (as lines are, where the spaces are) and the better-scored reading stays; one-word readings are not read
    again, and neither are whole lines."""
    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer.lexicon import find_lexicon

    truth = json.loads(sample_page.with_suffix(".json").read_text())
    first, second = truth["words"][:2]
    box = tuple(min(a, b) for a, b in zip(first["box"][:2], second["box"][:2], strict=True)) + tuple(
        max(a, b) for a, b in zip(first["box"][2:], second["box"][2:], strict=True)
    )
    gray = Image.open(sample_page).convert("L")
    crops = [cut_crop(gray, box), cut_crop(gray, tuple(second["box"]))]
    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), workers=1)
    recognizer.deslant_below = 0  # (no sheared second readings: every second call is this one)
    calls, read = [], recognizer._read

    def recorded(images, lines):
        results = read(images, lines)
        calls.append((len(images), list(lines), results))
        return results

    recognizer._read = recorded
    got = recognizer.predict(crops, [False, False])
    first_pass = calls[0][2]
    assert " " in first_pass[0][0].text and " " not in first_pass[1][0].text
    assert calls[1][:2] == (1, [True])  # the two-word crop alone, at its full width
    full_width = calls[1][2][0]
    expected = full_width[0] if full_width[1] > first_pass[0][1] else first_pass[0][0]
    assert got[0].text == expected.text and got[0].text == f"{first['text']} {second['text']}"
    calls.clear()
    recognizer.predict(crops[:1], True)  # a line: read at its full width already
    assert len(calls) == 1


def test_the_second_readings_of_a_call_are_one_call(sample_page):
    """Word crops read as several words (again at full width) and unsure leaning crops (again sheared upright) are
    read a second time together, in one call: a page waits for one second reading. A leaning crop read as several
    words is read sheared at both widths; each crop keeps its best-scored reading."""
    from services.common.crops import cut_crop
    from services.common.settings import DEFAULT_RECOGNIZER_DIR
    from services.recognizer import slant
    from services.recognizer.lexicon import find_lexicon

    truth = json.loads(sample_page.with_suffix(".json").read_text())
    first, second = truth["words"][:2]
    box = tuple(min(a, b) for a, b in zip(first["box"][:2], second["box"][:2], strict=True)) + tuple(
        max(a, b) for a, b in zip(first["box"][2:], second["box"][2:], strict=True)
    )
    gray = Image.open(sample_page).convert("L")
    two_words = cut_crop(gray, box)
    leaning = [slant.shear_crop(crop, -0.7)[0] for crop in _page_crops(sample_page, 6)[2:]]
    crops = [two_words, slant.shear_crop(two_words, -0.7)[0], *leaning]
    recognizer = Recognizer(DEFAULT_RECOGNIZER_DIR, lexicon=find_lexicon(DEFAULT_RECOGNIZER_DIR), workers=1)
    recognizer.deslant_below = 1.01  # every leaning crop is unsure
    calls, read = [], recognizer._read

    def recorded(images, lines):
        results = read(images, lines)
        calls.append((list(lines), results))
        return results

    recognizer._read = recorded
    got = recognizer.predict(crops)
    assert len(calls) == 2
    first_pass, (lines, again) = calls[0][1], calls[1]
    assert " " in first_pass[0][0].text and " " in first_pass[1][0].text
    # the two-word crop at full width; the leaning two-word crop at full width, and sheared at both widths; the
    # other leaning crops sheared, at the word scale
    assert lines == [True, True, False, True] + [False] * len(leaning)
    candidates = {0: [first_pass[0], again[0]], 1: [first_pass[1], again[1], again[2], again[3]]}
    candidates |= {2 + k: [first_pass[2 + k], again[4 + k]] for k in range(len(leaning))}
    for crop, readings in candidates.items():
        best = max(readings, key=lambda reading: reading[1])
        assert (got[crop].text, got[crop].confidence) == (best[0].text, best[0].confidence)
    assert got[0].text == f"{first['text']} {second['text']}"
