"""The recognizer's encoder (and its CTC head) under ONNX Runtime, on a CPU: the encoder is most of a crop's
cost, and ONNX Runtime runs it faster from the service's worker threads (models/recognizer/README.md). Its
output feeds the decoder (`onnx_decoder`, or torch's for beam search).

The graph comes from `onnx_export.encoder_graph` (at start, in memory, or from a serving folder's onnx/); only
PP-OCR encoders (the shipped model's) are exported, other checkpoints keep the torch encoder. No torch here.
"""

from __future__ import annotations

import logging

import numpy as np

from services.common.onnx_sessions import PROVIDERS, session_options

logger = logging.getLogger("handwriting.recognizer")


class OnnxEncoder:
    """Runs an exported encoder: pixels (N, 3, H, W) -> hidden states (N, T, D), CTC logits (N, T, C)."""

    def __init__(self, graph: bytes, threads: int = 0):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(graph, session_options(threads), providers=PROVIDERS)
        logger.info("encoder on ONNX Runtime", extra={"providers": self.session.get_providers()})

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden, ctc = self.session.run(None, {"pixel_values": np.ascontiguousarray(pixels, np.float32)})
        return hidden, ctc
