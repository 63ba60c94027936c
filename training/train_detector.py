"""Train and evaluate the YOLOv8 word/line detector with ultralytics, fully offline, and export it.

    python -m training.train_detector --data data/synth/detector/data.yaml \
        --config training/configs/detector_cpu.yaml --out runs/detector
    python -m training.train_detector ... --init-from models/detector/detector.pt   # resume

Models are built from a yaml (never a downloaded .pt). Validation pages are rendered with font
families held out of training, so mAP measures new hands. Writes best.pt, best.onnx, metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from services.detector.model import configure_ultralytics_offline


def evaluate(weights: Path, data: Path, image_size: int, device: str = "cpu") -> dict:
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(data), imgsz=image_size, device=device, plots=False, verbose=False, workers=0, batch=8
    )
    per_class = {}
    for index, name in metrics.names.items():
        precision, recall, map50, map5095 = (
            metrics.box.class_result(index) if index < len(metrics.box.ap_class_index) else (0, 0, 0, 0)
        )
        per_class[name] = {"precision": precision, "recall": recall, "mAP50": map50, "mAP50-95": map5095}
    return {"mAP50": metrics.box.map50, "mAP50-95": metrics.box.map, "per_class": per_class}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synth/detector/data.yaml"))
    parser.add_argument("--config", type=Path, default=Path("training/configs/detector_cpu.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/detector"))
    parser.add_argument("--init-from", type=Path, help="weights to continue from instead of the yaml")
    parser.add_argument("--hours", type=float, help="override the config's time budget")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["YOLO_VERBOSE"] = "True"  # progress in the training log
    configure_ultralytics_offline()
    import torch
    from ultralytics import YOLO

    if args.threads:
        torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    model_source = str(args.init_from) if args.init_from else config.pop("model")
    config.pop("model", None)
    if args.hours:
        config["time"] = args.hours
    model = YOLO(model_source)
    started = time.perf_counter()
    out = args.out.resolve()
    model.train(
        data=str(args.data.resolve()),
        project=str(out.parent),
        name=out.name,
        exist_ok=True,
        # from scratch unless continuing: ultralytics re-initialises the weights when pretrained is False
        pretrained=str(args.init_from) if args.init_from else False,
        amp=config.pop("amp", False),
        plots=False,
        **config,
    )
    minutes = (time.perf_counter() - started) / 60
    best = out / "weights" / "best.pt"
    metrics = evaluate(best, args.data, config["imgsz"], config.get("device", "cpu"))
    onnx_path = Path(YOLO(str(best)).export(format="onnx", imgsz=config["imgsz"], simplify=False))
    shutil.copy(best, out / "detector.pt")
    shutil.copy(onnx_path, out / "detector.onnx")
    report = {
        "train_minutes": round(minutes, 1),
        "config": str(args.config),
        "init_from": str(args.init_from),
        "validation": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
