"""The recognizer's encoder (and its CTC head) under ONNX Runtime: the encoder is most of a crop's cost on a
CPU, and ONNX Runtime runs it faster (the service's decoding: 12.8 -> 8.8 ms a word crop, same readings; see
models/recognizer/README.md). The decoder stays in torch and reads the encoder's output as before.

The graph is exported from the loaded torch encoder when the recognizer starts (a few seconds, in memory:
no file to go stale beside the weights), with the batch and the width dynamic; `tests/test_recognizer_model.py`
checks that both backends read the same. Only PP-OCR encoders (the shipped model's) are exported; other
checkpoints keep the torch encoder.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import torch

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

        options = session_options(onnxruntime, threads)
        graph = graph if graph is not None else export(encoder, example)
        self.session = onnxruntime.InferenceSession(graph, options, providers=providers())
        logger.info("encoder on ONNX Runtime", extra={"providers": self.session.get_providers()})

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, ctc = self.session.run(None, {"pixel_values": np.ascontiguousarray(pixel_values.cpu().numpy())})
        return torch.from_numpy(hidden), torch.from_numpy(ctc)


def session_options(onnxruntime, threads: int = 0):
    """All the process's cores (torch's thread count) for one inference at a time, graph fully optimised, no
    spinning."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads() or (os.cpu_count() or 1)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: the spinning threads would take the cores from the torch and numpy work
    # (and the other sessions) that runs between them (the sample page: 794 -> 458 ms a recognizer call)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
