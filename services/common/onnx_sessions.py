"""Where the model services run a model on ONNX Runtime, the settings of its sessions, and serving folders (graphs
exported beside the weights, read without torch). No torch here; onnxruntime is imported only when a session is
made."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

_threads = 0  # set_threads


def set_threads(count: int) -> None:
    """The threads the process's models use (HW_TORCH_THREADS): ONNX Runtime's sessions made afterwards, and
    torch's where it is installed."""
    global _threads
    _threads = count
    try:
        import torch
    except ImportError:  # a torch-free image
        return
    torch.set_num_threads(count)


def cpu_threads() -> int:
    """The threads a model may use: `set_threads`'s count, else torch's where it is loaded (ultralytics changes
    it), else the cores this process may run on."""
    torch = sys.modules.get("torch")
    if _threads:
        return _threads
    if torch is not None:
        return torch.get_num_threads() or 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def session_options(threads: int = 0):
    """`threads` intra-op threads (0: `cpu_threads()`, all the process's cores) for one inference at a time,
    the graph fully optimised, and no spinning: by default ONNX Runtime's threads busy-wait after each run, taking
    the cores from whatever runs next (the recognizer's torch and numpy work between the decoder's short runs:
    the sample page's recognizer call 794 -> 458 ms without it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


# the onnxruntime package the project installs runs on CPUs; on a GPU the models run in torch, on the GPU
PROVIDERS = ["CPUExecutionProvider"]


def serves(backend: str, device: str) -> bool:
    """Whether a model runs on ONNX Runtime: the onnx backend on a CPU. On a GPU torch runs it there (an encoder
    on ONNX Runtime's CPU provider beside a GPU would leave the GPU idle for nine tenths of a page's work)."""
    return backend == "onnx" and device == "cpu"


# A serving folder: a model's folder with its exported graphs in onnx/ (`write_graphs`), which a service reads
# instead of exporting them from the weights at start: it then needs neither torch nor ultralytics (the CPU images).
GRAPHS_FOLDER = "onnx"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_graphs(weights: Path, graphs: dict[str, bytes], meta: dict) -> Path:
    """Write `graphs` (name -> ONNX bytes) and `meta` (with the sha256 of `weights`, the file they came from) into
    onnx/ beside `weights`."""
    folder = weights.parent / GRAPHS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in graphs.items():
        (folder / f"{name}.onnx").write_bytes(graph)
    meta = {**meta, "weights": weights.name, "weights_sha256": file_digest(weights)}
    (folder / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_graphs(weights: Path, names: tuple[str, ...]) -> tuple[dict[str, bytes], dict] | None:
    """The graphs and meta `write_graphs` wrote beside `weights`, or None where there are none. Graphs of other
    weights than those beside them are refused (a stale folder would serve another model than its card's)."""
    folder = weights.parent / GRAPHS_FOLDER
    if not (folder / "onnx.json").exists():
        return None
    meta = json.loads((folder / "onnx.json").read_text())
    if weights.exists() and file_digest(weights) != meta.get("weights_sha256"):
        raise ValueError(
            f"{folder} holds graphs of other weights than {weights}: export them again or remove the folder"
        )
    return {name: (folder / f"{name}.onnx").read_bytes() for name in names}, meta
