"""The recognizer's graphs as `onnx_export` makes them (in memory at start, or from a serving folder's onnx/, see
services.common.onnx_sessions.read_graphs). No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common import onnx_sessions

NAMES = ("encoder", "cross", "step")
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Bundle:
    encoder: bytes | None
    cross: bytes | None
    step: bytes | None
    decoder: dict  # onnx_export.decoder_meta: the decoder's shape and special tokens


def load(model_dir: str | Path) -> Bundle | None:
    """The graphs in `model_dir`/onnx, or None when it has none."""
    found = onnx_sessions.read_graphs(Path(model_dir) / WEIGHTS, NAMES)
    if found is None:
        return None
    graphs, meta = found
    return Bundle(*(graphs[name] for name in NAMES), meta["decoder"])
