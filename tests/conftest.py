"""Shared fixtures: tiny real models built from config, free ports, images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


from handwriting.stack import free_port  # noqa: E402,F401  (tests import it from here)


def png_bytes(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def word_page(words: list[tuple[tuple[int, int, int, int], int]], size=(400, 300)) -> Image.Image:
    """A page with solid rectangles as 'words', each with its own gray level (what fakes read back)."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for box, level in words:
        draw.rectangle(box, fill=(level, level, level))
    return image


@pytest.fixture(scope="session")
def tiny_recognizer_dir(tmp_path_factory) -> Path:
    """A real compact TrOCR (random weights) with the char tokenizer, saved like a shipped model."""
    from services.recognizer import compact_trocr

    path = tmp_path_factory.mktemp("tiny-recognizer")
    import torch

    torch.manual_seed(0)  # the same random weights every run, so what the model reads is reproducible
    tokenizer = compact_trocr.build_char_tokenizer()
    model = compact_trocr.build_model(
        tokenizer,
        encoder={
            "image_height": 32,
            "image_width": 64,
            "conv_channels": (8, 8, 16, 16, 32),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        decoder={"d_model": 32, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64},
        max_length=8,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_stock_trocr_dir(tmp_path_factory) -> Path:
    """A stock-architecture TrOCR (ViT encoder + TrOCR decoder + ViT image processor), as Microsoft ships."""
    from transformers import (
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    from services.recognizer import compact_trocr

    path = tmp_path_factory.mktemp("tiny-stock-trocr")
    import torch

    torch.manual_seed(0)
    tokenizer = compact_trocr.build_char_tokenizer()
    encoder = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        add_pooling_layer=False,
    )
    decoder = compact_trocr.char_decoder_config(
        tokenizer, d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64
    )
    model = compact_trocr.assemble(encoder, decoder, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_detector_weights(tmp_path_factory) -> Path:
    """A real YOLOv8n built from its yaml (random weights), saved as a .pt like a trained one."""
    from services.detector.model import configure_ultralytics_offline

    configure_ultralytics_offline(tmp_path_factory.mktemp("yolo-config"))
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("tiny-detector") / "detector.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


@pytest.fixture(scope="session")
def sample_page() -> Path:
    return REPO_ROOT / "samples" / "page.png"
