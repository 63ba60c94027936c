"""The PP-OCRv6 encoder port: its input, its padding mask, and that it computes what the ONNX it came from does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from services.recognizer import ppocr_encoder, ppocr_pixels
from tests.conftest import REPO_ROOT

TINY = {
    "stem_channels": (8, 16),
    "blocks": ([16, 1, True], [32, 2, False], [32, 1, True], [48, 2, False], [48, 1, True]),
    "hidden_size": 24,
    "num_attention_heads": 4,
    "intermediate_size": 48,
}


def test_pixels_height_margin_and_padding():
    narrow = Image.new("L", (40, 20), 255)
    narrow.paste(0, (0, 0, 20, 20))  # left half ink, right half paper
    wide = Image.new("L", (100, 20), 128)
    pixels = ppocr_encoder.prepare_pixels([narrow, wide], 48, 1600)
    # 40x20 -> 96x48, + 25% white = 120; 100x20 -> 240x48, + 25% = 300 -> 304 (a multiple of 8)
    assert pixels.shape == (2, 3, 48, 304)
    row = pixels[0, 0, 10]
    assert float(row[:47].max()) == -1.0 and float(row[49:120].min()) == 1.0  # ink black, paper and margin white
    assert float(row[120:].max()) == float(row[120:].min()) == ppocr_encoder.PADDING
    assert torch.equal(pixels[0, 0], pixels[0, 2])  # gray in all three channels
    assert float(pixels[1, 0, 10, 200]) == pytest.approx(128 / 127.5 - 1, abs=1e-6)  # too flat to stretch
    assert float(pixels[1, 0, 10, 303]) == 1.0
    squeezed = ppocr_encoder.prepare_pixels([Image.new("L", (1000, 10), 255)], 48, 400)
    assert squeezed.shape[3] == 504  # 400 + 100 margin, rounded up to 8


def test_width_scale_narrows_the_crop_and_its_margin_not_its_height():
    narrow = Image.new("L", (40, 20), 255)
    narrow.paste(0, (0, 0, 20, 20))  # left half ink
    pixels = ppocr_encoder.prepare_pixels([narrow], 48, 1600, width_scale=0.9)
    # 40x20 -> 96x48 at its aspect, 0.9 of that: 86 px; + 25% white = 107.5 -> 112 (a multiple of 8)
    assert pixels.shape == (1, 3, 48, 112)
    row = pixels[0, 0, 10]
    assert float(row[:42].max()) == -1.0 and float(row[44:].min()) == 1.0  # the ink spans 43 of 86 px
    assert ppocr_pixels.content_fraction(narrow, 48, 1600, 0.9) == 86 / 112
    assert ppocr_pixels.content_fraction(narrow, 48, 1600) == 96 / 120
    assert ppocr_encoder.PPOCREncoderConfig().width_scale == 1.0  # PP-OCR's own reading unless a model says


def test_a_crop_reads_the_same_alone_and_beside_a_wider_one():
    torch.manual_seed(0)
    encoder = ppocr_encoder.PPOCREncoderModel(ppocr_encoder.PPOCREncoderConfig(**TINY)).eval()
    with torch.no_grad():  # weights of some size, so that every layer passes its input on
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.3)
    rng = np.random.default_rng(0)
    short = Image.fromarray(rng.integers(0, 255, (30, 70), dtype=np.uint8))
    long = Image.fromarray(rng.integers(0, 255, (30, 400), dtype=np.uint8))
    with torch.inference_mode():
        alone = encoder(pixel_values=ppocr_encoder.prepare_pixels([short], 48, 1600)).last_hidden_state[0]
        pixels = ppocr_encoder.prepare_pixels([short, long], 48, 1600)
        beside = encoder(pixel_values=pixels).last_hidden_state[0]
    columns = encoder.owned_columns(pixels, beside.shape[0])[0]
    assert columns == alone.shape[0] == 18  # 70x30 -> 112x48, +25% = 140 -> 144 px: 18 columns
    assert alone.abs().mean() > 0.1
    assert torch.allclose(alone, beside[:columns], atol=1e-4)
    # without the mask the padding would change the reading: the SE averages and attention span it all
    unmasked = pixels.masked_fill(pixels == ppocr_encoder.PADDING, 1.0)
    with torch.inference_mode():
        differs = encoder(pixel_values=unmasked).last_hidden_state[0, :columns]
    assert (alone - differs).abs().max() > 1e-2


@pytest.mark.slow
def test_the_port_computes_what_the_onnx_computes():
    """The importer's weights in our torch code against onnxruntime on the original model, on a real line."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from training import import_ppocr

    path = import_ppocr.default_onnx()
    graph = import_ppocr.OnnxGraph(path)
    encoder = ppocr_encoder.PPOCREncoderModel(ppocr_encoder.PPOCREncoderConfig()).eval()
    weight, bias = import_ppocr.load_encoder_weights(encoder, graph)
    page = Image.open(REPO_ROOT / "samples" / "page.png").convert("L")
    line = page.crop((0, 0, page.width, min(page.height, 120)))
    pixels = ppocr_encoder.prepare_pixels([line], 48, 1600)
    with torch.inference_mode():
        hidden = encoder(pixel_values=pixels).last_hidden_state[0].numpy()
    logits = hidden @ weight + bias
    ours = np.exp(logits - logits.max(-1, keepdims=True))
    ours /= ours.sum(-1, keepdims=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})[0][0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_each_crops_own_columns_are_the_same_in_half_precision():
    """HW_DTYPE runs the encoder in float16 or bfloat16: each crop's share of a padded batch (the masks, and the CTC
    columns it owns) is counted in integers; computed in bfloat16, it put the crop's last column one off."""
    crops = [Image.new("L", (width, 40), 255) for width in range(30, 1200, 37)]
    pixels = ppocr_encoder.prepare_pixels(crops, 48, 1600)
    owned = ppocr_encoder.PPOCREncoderModel.owned_columns
    _, counts = ppocr_encoder.split_padding(pixels.bfloat16())  # what the encoder's masks are made of
    for columns in range(50, 400, 7):
        expected = owned(pixels, columns)
        assert owned(pixels.bfloat16(), columns) == expected and owned(pixels.half(), columns) == expected
        masks = ppocr_encoder._columns(counts, columns, torch.bfloat16)  # (N, 1, 1, columns)
        assert masks.float().sum(dim=-1).flatten().int().tolist() == expected
