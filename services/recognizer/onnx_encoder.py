"""The recognizer's encoder (and its CTC head) under ONNX Runtime, on a CPU: the encoder is most of a crop's
cost, and ONNX Runtime runs it faster (the service's decoding: 12.8 -> 8.8 ms a word crop, same readings; see
models/recognizer/README.md). Its output feeds the decoder (`onnx_decoder`, or torch's for beam search).

The graph is exported from the loaded torch encoder when the recognizer starts (a few seconds, in memory:
no file to go stale beside the weights), with the batch and the width dynamic; `tests/test_recognizer_model.py`
checks that both backends read the same. Only PP-OCR encoders (the shipped model's) are exported; other
checkpoints keep the torch encoder.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import torch

from services.common.onnx_sessions import PROVIDERS, session_options

logger = logging.getLogger("handwriting.recognizer")


class _EncoderWithCtc(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(pixel_values=pixel_values).last_hidden_state
        return hidden, self.encoder.ctc_logits(hidden)


def export(encoder: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The encoder and its CTC head as ONNX bytes: pixel_values (N, 3, H, W) -> hidden (N, T, D), ctc (N, T, C)."""
    buffer = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(
            _EncoderWithCtc(encoder).eval(),
            (example,),
            buffer,
            input_names=["pixel_values"],
            output_names=["hidden", "ctc"],
            dynamic_axes={
                "pixel_values": {0: "batch", 3: "width"},
                "hidden": {0: "batch", 1: "columns"},
                "ctc": {0: "batch", 1: "columns"},
            },
            opset_version=17,
            dynamo=False,  # the TorchScript exporter handles the padding masks with dynamic widths
        )
    return buffer.getvalue()


class OnnxEncoder:
    """Runs the exported encoder; `__call__` gives torch tensors (hidden states, CTC logits)."""

    def __init__(self, encoder: torch.nn.Module, example: torch.Tensor, threads: int = 0, graph: bytes | None = None):
        """`graph`: an exported encoder to run instead (e.g. one quantised by training.quantize_encoder)."""
        import onnxruntime

        options = session_options(threads)
        graph = graph if graph is not None else export(encoder, example)
        self.session = onnxruntime.InferenceSession(graph, options, providers=PROVIDERS)
        logger.info("encoder on ONNX Runtime", extra={"providers": self.session.get_providers()})

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, ctc = self.session.run(None, {"pixel_values": np.ascontiguousarray(pixel_values.cpu().numpy())})
        return torch.from_numpy(hidden), torch.from_numpy(ctc)
