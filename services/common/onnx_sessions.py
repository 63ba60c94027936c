"""ONNX Runtime session settings shared by the model services (imported only where onnxruntime is installed)."""

from __future__ import annotations

import os


def session_options(threads: int = 0):
    """`threads` intra-op threads (0: torch's thread count, all the process's cores) for one inference at a time,
    the graph fully optimised, and no spinning: by default ONNX Runtime's threads busy-wait after each run, taking
    the cores from whatever runs next (the recognizer's torch and numpy work between the decoder's short runs:
    the sample page's recognizer call 794 -> 458 ms without it)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads() or (os.cpu_count() or 1)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def providers() -> list[str]:
    """CUDA where the installed onnxruntime has it, else the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
