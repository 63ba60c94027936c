"""The recognizer's encoder (and its CTC head) under ONNX Runtime, on a CPU: the encoder is most of a crop's
cost, and ONNX Runtime runs it faster from the service's worker threads (models/recognizer/README.md). Its
output feeds the decoder (`onnx_decoder`, or torch's for decoders it does not export).

The graph comes from `onnx_export.encoder_graph` (at start, in memory, or from a serving folder's onnx/); only
PP-OCR encoders (the shipped model's) are exported, other checkpoints keep the torch encoder. No torch here.

`OpenVinoEncoder` runs the same graph on OpenVINO in bfloat16 (HW_DTYPE=bfloat16 on a CPU): where the CPU
computes bfloat16 natively (AVX-512 BF16, AMX) its convolutions run about twice as fast as ONNX Runtime's float32
ones, and read a little differently (models/recognizer/README.md); elsewhere OpenVINO runs float32.
"""

from __future__ import annotations

import functools
import io
import logging
import threading

import numpy as np

from services.common.onnx_sessions import PROVIDERS, cpu_threads, session_options

logger = logging.getLogger("handwriting.recognizer")


@functools.cache
def native_bfloat16() -> bool:
    """Whether OpenVINO is installed and this CPU computes bfloat16 itself (AVX-512 BF16 or AMX), where the encoder
    runs in bfloat16 by default (HW_DTYPE=auto): in 0.35 of its float32 time on a Xeon with AMX, 0.53 on an AMD
    EPYC with AVX-512 BF16 (models/recognizer/README.md)."""
    try:
        import openvino
    except ImportError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OnnxEncoder:
    """Runs an exported encoder: pixels (N, 3, H, W) -> hidden states (N, T, D), CTC logits (N, T, C)."""

    def __init__(self, graph: bytes, threads: int = 0):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(graph, session_options(threads), providers=PROVIDERS)
        logger.info("encoder on ONNX Runtime", extra={"providers": self.session.get_providers()})

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden, ctc = self.session.run(None, {"pixel_values": np.ascontiguousarray(pixels, np.float32)})
        return hidden, ctc


class OpenVinoEncoder:
    """`OnnxEncoder`'s graph on OpenVINO in `precision` (bf16 by default; f32 where the CPU has no bfloat16).
    `streams` calls may run at once (the recognizer's workers, each from its own thread), sharing `threads`.
    Moving data in and out of the requests is done one thread at a time: two threads inside OpenVINO's input copy
    at once (`infer(inputs)`, `data_dispatcher.update_tensor`) hung now and then at the first calls (a recognizer's
    warm-up, about one start in six on 2026-12-05); the inferences themselves still run side by side."""

    def __init__(self, graph: bytes, threads: int = 0, streams: int = 1, precision: str = "bf16"):
        try:
            import openvino
        except ImportError as error:  # installed with the project's `models` and `recognizer-cpu` extras
            raise RuntimeError("bfloat16 on a CPU runs the encoder on OpenVINO: pip install openvino") from error

        core = openvino.Core()
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "NUM_STREAMS": max(1, streams),
            "INFERENCE_NUM_THREADS": max(threads or cpu_threads(), streams),
        }
        self.compiled = core.compile_model(core.read_model(io.BytesIO(graph)), "CPU", config)
        # what the CPU runs: bf16 only where it computes it natively
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._tensor = openvino.Tensor
        self._requests = threading.local()  # an infer request per calling thread
        self._moving = threading.Lock()
        logger.info("encoder on OpenVINO", extra={"precision": self.precision, "streams": streams})

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            with self._moving:
                request = self._requests.request = self.compiled.create_infer_request()
        with self._moving:
            request.set_input_tensor(self._tensor(np.ascontiguousarray(pixels, np.float32)))
        request.infer()
        with self._moving:  # (the request's buffers are reused by its next call)
            return request.get_output_tensor(0).data.copy(), request.get_output_tensor(1).data.copy()
