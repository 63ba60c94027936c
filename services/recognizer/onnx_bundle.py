"""A serving folder's exported graphs (`onnx_export.write_bundle`): the model's folder with onnx/ beside its
weights. A recognizer on ONNX Runtime reads its graphs from there when they are present, and then needs no
torch; graphs exported from other weights than the folder's are refused. No torch here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FOLDER = "onnx"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Bundle:
    encoder: bytes | None
    cross: bytes | None
    step: bytes | None
    decoder: dict  # onnx_export.decoder_meta: the decoder's shape and special tokens


def weights_digest(model_dir: str | Path) -> str | None:
    weights = Path(model_dir) / WEIGHTS
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else None


def load(model_dir: str | Path) -> Bundle | None:
    """The graphs in `model_dir`/onnx, or None when it has none."""
    folder = Path(model_dir) / FOLDER
    if not (folder / "onnx.json").exists():
        return None
    meta = json.loads((folder / "onnx.json").read_text())
    digest = weights_digest(model_dir)
    if digest is not None and digest != meta.get("weights_sha256"):
        raise ValueError(
            f"{folder} holds graphs of other weights than {Path(model_dir) / WEIGHTS}: export them again "
            f"(python -m services.recognizer.onnx_export --model-dir {model_dir} --out {model_dir}) or remove it"
        )
    graphs = {name: (folder / f"{name}.onnx").read_bytes() for name in ("encoder", "cross", "step")}
    return Bundle(graphs["encoder"], graphs["cross"], graphs["step"], meta["decoder"])
