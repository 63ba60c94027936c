"""Export the recognizer's encoder (PP-OCR's, with its CTC head) to ONNX and quantise it to int8 with ONNX
Runtime, for the service's `HW_ENCODER_ONNX` (a faster mode that gives up some accuracy: figures in
models/recognizer/README.md, "Serving backend").

    PYTHONPATH=. .venv/bin/python -m training.quantize_encoder --calibration data/synth-s17/recognizer/val \
        --out runs/encoder-int8.onnx [--mode static-conv|static|dynamic]

- `static-pointwise` (default): the 1x1 convolutions over all channels (most of the encoder's arithmetic) with
  weights (per channel) and inputs in int8, their ranges calibrated on crops cut as the service cuts them
  (`--calibration`: a crop folder of `make_data`, never the test crops); the depthwise and other
  convolutions and the rest stay float.
- `static-conv`: every convolution so, calibrated the same way.
- `static`: every operator ONNX Runtime can quantise, calibrated the same way.
- `dynamic`: weights in int8, activations quantised on the fly (no calibration); convolutions become
  ConvInteger, which ONNX Runtime's CPU kernels run slower than float ones.

Measure what a graph reads and how fast with `training.evaluate_models --encoder-onnx FILE`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from services.common.settings import DEFAULT_RECOGNIZER_DIR  # noqa: E402

MODES = ("static-pointwise", "static-conv", "static", "dynamic")


def calibration_crops(folder: Path, count: int, seed: int = 0) -> list[Image.Image]:
    """`count` crops drawn at random from a `make_data` crop folder."""
    from training.train_recognizer import read_split

    rows = read_split(folder)
    random.Random(seed).shuffle(rows)
    return [Image.open(path).convert("L") for path, _ in rows[:count]]


def quantize(
    model_dir: Path, out: Path, mode: str, crops: list[Image.Image], smooth: bool = True, batch: int = 16
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from services.recognizer import onnx_export, ppocr_pixels
    from services.recognizer.checkpoint import load_checkpoint

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    checkpoint = load_checkpoint(model_dir)
    if checkpoint.model.config.encoder.model_type != ppocr_pixels.MODEL_TYPE:
        raise ValueError(f"{model_dir}: only PP-OCR encoders (the shipped model's) are exported")
    with tempfile.TemporaryDirectory() as folder:
        exported, prepared = Path(folder) / "encoder.onnx", Path(folder) / "prepared.onnx"
        exported.write_bytes(onnx_export.encoder_graph(checkpoint.model.encoder))
        quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
            return
        ordered = sorted(crops, key=lambda crop: crop.width / max(1, crop.height))  # batches as the service forms

        class Batches(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(range(0, len(ordered), batch))

            def get_next(self):
                start = next(self.batches, None)
                if start is None:
                    return None
                return {"pixel_values": checkpoint.preprocess(ordered[start : start + batch]).numpy()}

        quantize_static(
            str(prepared),
            str(out),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"] if mode in ("static-conv", "static-pointwise") else None,
            nodes_to_exclude=_not_pointwise(prepared) if mode == "static-pointwise" else None,
            calibrate_method=CalibrationMethod.MinMax,
            # ranges averaged over the batches rather than the extremes of any one crop
            extra_options={"CalibMovingAverage": True, "CalibMovingAverageConstant": 0.01} if smooth else {},
        )


def _not_pointwise(graph: Path) -> list[str]:
    """The convolutions of `graph` that are not 1x1 over all channels (depthwise, the stem's, the neck's)."""
    import onnx

    names = []
    for node in onnx.load(str(graph)).graph.node:
        if node.op_type != "Conv":
            continue
        attributes = {a.name: a for a in node.attribute}
        group = attributes["group"].i if "group" in attributes else 1
        kernel = tuple(attributes["kernel_shape"].ints) if "kernel_shape" in attributes else ()
        if group > 1 or kernel != (1, 1):
            names.append(node.name)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_RECOGNIZER_DIR)
    parser.add_argument("--calibration", type=Path, help="a make_data crop folder (static modes)")
    parser.add_argument("--count", type=int, default=256, help="calibration crops")
    parser.add_argument("--mode", choices=MODES, default="static-pointwise")
    parser.add_argument("--extremes", action="store_true", help="ranges from the extremes, not averaged")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mode != "dynamic" and args.calibration is None:
        parser.error("static modes need --calibration")
    crops = calibration_crops(args.calibration, args.count) if args.calibration else []
    quantize(args.model, args.out, args.mode, crops, smooth=not args.extremes)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {args.mode})")


if __name__ == "__main__":
    main()
