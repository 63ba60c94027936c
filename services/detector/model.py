"""Word and line detection with an ultralytics YOLOv8 model loaded from a local weights file.

No gRPC here: `Detector.predict(image)` takes a PIL image and returns boxes in its pixels. On a CPU the
network runs on ONNX Runtime (`backend="onnx"`, the default: exported from the weights when the detector
starts, through ultralytics, with dynamic input sizes; the same boxes, and faster than torch where the
service calls it, from a worker thread: `benchmarks/backends.py`).

A word box can grow into a weaker box of the detector's own (scored from `extend_score` up to `min_score`)
that holds most of it and no other word: on real ink the detector, trained on synthetic pages, often finds
the x-height body of a word with confidence and the whole word, ascenders and a last letter included, with
less ("wor" of "word").
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from services.common import geometry, onnx_sessions
from services.common.geometry import WORD

logger = logging.getLogger("handwriting.detector")
# Weaker word boxes, scored from EXTEND_SCORE up to the detector's min_score, may grow a word box (see
# `grow_into_weaker`); candidates are kept through NMS at EXTEND_IOU so that boxes over a found word survive.
EXTEND_SCORE = 0.1
EXTEND_IOU = 0.7


THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS", "MKL_NUM_THREADS")


def configure_ultralytics_offline(config_dir: str | Path | None = None) -> None:
    """Make ultralytics run with zero network calls (no settings sync, no font or weight downloads).

    Must run before `ultralytics` is imported.
    """
    config_dir = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or Path.home() / ".cache" / "handwriting-yolo")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.exists():  # plots need a font; ultralytics would download Arial otherwise
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    # importing ultralytics sets OMP_NUM_THREADS=1 (and NUMEXPR_MAX_THREADS) in os.environ: every process started
    # afterwards (a local stack's services, `handwriting.stack`) would run torch and ONNX Runtime on one thread
    # (the sample page through gRPC: 497 -> 736 ms when the launching process had loaded the detector)
    threads_before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    from ultralytics import settings

    for name, value in threads_before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    settings.update({"sync": False})
    _restore_pillow_open()


def _restore_pillow_open() -> None:
    """ultralytics replaces PIL.Image.open with a wrapper that, on an unidentified image, tries to pip
    install pi-heif. A service must answer 'not an image' instead: put Pillow's own function back."""
    from ultralytics.utils import patches

    original = getattr(patches, "_image_open", None)
    if original is not None:
        Image.open = original


@dataclass(frozen=True)
class Detection:
    class_id: int
    box: tuple[float, float, float, float]  # left, top, right, bottom in input pixels
    score: float


class Detector:
    """Finds word and line boxes on pages. Load once at start-up; `predict` and `predict_batch` are not
    re-entrant."""

    def __init__(
        self,
        weights: str | Path,
        device: str = "cpu",
        image_size: int = 640,
        min_score: float = 0.25,
        iou: float = 0.3,  # words on a page barely overlap: a second box over a word is a duplicate
        max_detections: int = 1000,
        extend_score: float = EXTEND_SCORE,  # 0: word boxes never grow into weaker ones
        backend: str = "onnx",  # "onnx" (ONNX Runtime, on a CPU) or "torch"
    ):
        weights = Path(weights)
        if not weights.exists():
            raise FileNotFoundError(f"detector weights not found: {weights}")
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be onnx or torch, not {backend!r}")
        configure_ultralytics_offline()
        from ultralytics import YOLO

        # ultralytics sets torch's threads to cores - 1 when it picks a CPU device (1 on two cores): the process's
        # setting (all cores, or HW_TORCH_THREADS) is put back once the model is loaded and warmed up
        threads = torch.get_num_threads()
        self.backend = "onnx" if onnx_sessions.serves(backend, device) else "torch"
        self.device = device
        self.image_size = image_size
        self.min_score = min_score
        self.iou = iou
        self.max_detections = max_detections
        self.extend_score = extend_score
        # the exported graph is read into its session as the model loads: its folder goes right after, so a
        # service stopped by a signal (no atexit) leaves nothing behind
        with tempfile.TemporaryDirectory(prefix="detector-onnx-") as folder:
            model_file = export_onnx(weights, image_size, Path(folder)) if self.backend == "onnx" else weights
            self.model = YOLO(str(model_file), task="detect")
            # one warm-up pass so the first request does not pay for lazy initialisation
            self.predict(Image.new("RGB", (image_size, image_size), (255, 255, 255)))
            torch.set_num_threads(threads)
            if self.backend == "onnx":
                self._replace_session(model_file)
        logger.info("detector loaded", extra={"weights": str(weights), "device": device, "backend": self.backend})

    def _replace_session(self, model_file: Path) -> None:
        """ultralytics makes its ONNX Runtime session with the defaults, whose threads busy-wait after each run
        and take the cores from what runs next (in a stack on one machine, the recognizer): the same graph in a
        session that does not spin, with the process's threads."""
        import onnxruntime

        backend = getattr(getattr(getattr(self.model, "predictor", None), "model", None), "backend", None)
        if getattr(backend, "session", None) is None:  # another ultralytics layout: its own session stays
            logger.warning("detector: ultralytics' ONNX Runtime session not found; it stays as ultralytics made it")
            return
        backend.session = onnxruntime.InferenceSession(
            str(model_file), onnx_sessions.session_options(), providers=onnx_sessions.PROVIDERS
        )
        self.predict(Image.new("RGB", (self.image_size, self.image_size), (255, 255, 255)))

    def predict(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        return self.predict_batch([(image, min_score)])[0]

    def predict_batch(self, pages: list[tuple[Image.Image, float | None]]) -> list[list[Detection]]:
        """The detections of each (image, min_score or None for the detector's own), the images of one padded
        size and score floor in one network call. ultralytics pads a batch of one size as it pads a single
        image (to a multiple of the stride), so a page finds the same boxes alone or in a batch."""
        inputs = [self._network_input(image) for image, _ in pages]
        floors = [self.min_score if min_score is None else min_score for _, min_score in pages]
        groups: dict[tuple, list[int]] = {}
        for i, (array, floor) in enumerate(zip(inputs, floors, strict=True)):
            groups.setdefault((array.shape, floor), []).append(i)
        results: list[list[Detection]] = [[] for _ in pages]
        for (_, floor), members in groups.items():
            extend = 0 < self.extend_score < floor
            found = self.model.predict(
                [inputs[i] for i in members],
                imgsz=self.image_size,
                conf=self.extend_score if extend else floor,
                iou=max(self.iou, EXTEND_IOU) if extend else self.iou,
                max_det=self.max_detections * (3 if extend else 1),
                device=self.device,
                verbose=False,
            )
            for i, result in zip(members, found, strict=True):
                results[i] = self._detections(result, pages[i][0].size, floor, extend)
        return results

    def _network_input(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB")
        if max(rgb.size) < self.image_size:
            # never upscale: a small image (one line, one word) would get letters the size of words.
            # Pad it onto a white canvas instead; boxes stay in the image's own coordinates.
            canvas = Image.new("RGB", (self.image_size, self.image_size), (255, 255, 255))
            canvas.paste(rgb, (0, 0))
            rgb = canvas
        return np.asarray(rgb)[:, :, ::-1]  # ultralytics takes numpy arrays as BGR

    def _detections(self, result, size: tuple[int, int], floor: float, extend: bool) -> list[Detection]:
        width, height = size
        xyxy = result.boxes.xyxy.cpu().clone()
        xyxy[:, 2].clamp_(max=width)
        xyxy[:, 3].clamp_(max=height)
        classes = result.boxes.cls.cpu().long()
        scores = result.boxes.conf.cpu()
        sure = torch.nonzero(scores >= floor).flatten()
        if extend:  # the boxes the detector keeps at its own score and NMS (lower scores never suppress higher)
            sure = sure[torchvision.ops.batched_nms(xyxy[sure], scores[sure], classes[sure], self.iou)]
            sure = sure[: self.max_detections]
        detections = [
            Detection(int(classes[i]), tuple(float(v) for v in xyxy[i]), float(scores[i]))
            for i in sure.tolist()
            if xyxy[i, 2] > xyxy[i, 0] and xyxy[i, 3] > xyxy[i, 1]
        ]
        detections = merge_nested(detections)
        if extend:
            kept = set(sure.tolist())
            weaker = [
                tuple(float(v) for v in xyxy[i]) for i in range(len(scores)) if i not in kept and classes[i] == WORD
            ]
            detections = grow_into_weaker(detections, weaker)
        return drop_flat_words(detections)


def grow_into_weaker(
    detections: list[Detection], weaker: list[tuple[float, ...]], hold: float = 0.6, max_growth: float = 2.0
) -> list[Detection]:
    """Grow each word box to the union of the weaker word boxes that each hold at least `hold` of it and touch
    (more than a tenth of) no other word box, as long as it stays within `max_growth` x its width and height.

    A weaker box that spans two found words holds neither alone, so it joins nothing; one around a word's
    body brings back the ascenders, descenders and end letters that the confident box cut off.
    """
    words = [i for i, d in enumerate(detections) if d.class_id == WORD]
    grown: dict[int, tuple[float, ...]] = {}
    for box in weaker:
        touched = [
            i for i in words if geometry.intersection(detections[i].box, box) > 0.1 * geometry.area(detections[i].box)
        ]
        if len(touched) != 1:
            continue
        word = detections[touched[0]].box
        if geometry.intersection(word, box) < hold * geometry.area(word):
            continue
        union = geometry.union([grown.get(touched[0], word), box])
        wide, tall = union[2] - union[0], union[3] - union[1]
        if wide <= max_growth * (word[2] - word[0]) and tall <= max_growth * (word[3] - word[1]):
            grown[touched[0]] = union
    return [Detection(d.class_id, grown[i], d.score) if i in grown else d for i, d in enumerate(detections)]


def export_onnx(weights: Path, image_size: int, folder: Path) -> Path:
    """The network of `weights` as ONNX (dynamic batch and size, no simplifier), written in `folder`: the
    weights' own folder may be read-only."""
    from ultralytics import YOLO

    copy = folder / weights.name
    shutil.copy(weights, copy)
    exported = YOLO(str(copy), task="detect").export(
        format="onnx", imgsz=image_size, dynamic=True, simplify=False, verbose=False
    )
    return Path(exported)


def merge_nested(detections: list[Detection], containment: float = 0.8) -> list[Detection]:
    """Merge a box that lies mostly inside another box of the same class into it.

    NMS keeps both when a word is found whole and in part (the x-height band of "word" under its
    ascender, say): their IoU is low, yet on a page words never nest. The merged box is the union of
    the two, with the higher score, so the part cannot cut the word short.
    """
    merged: list[Detection] = []
    for detection in sorted(detections, key=lambda d: d.score, reverse=True):
        for i, kept in enumerate(merged):
            if kept.class_id == detection.class_id and geometry.contained(detection.box, kept.box, containment):
                merged[i] = Detection(kept.class_id, geometry.union([kept.box, detection.box]), kept.score)
                break
        else:
            merged.append(detection)
    return merged


def drop_flat_words(detections: list[Detection], min_height_ratio: float = 0.4) -> list[Detection]:
    """Drop word boxes flatter than `min_height_ratio` x the median word height of the image.

    Such a box (a strip along the image's edge, a ruled line) holds no word, and as a line of its own
    it would shift the reading order of its neighbours. Fewer than 3 words are too few to judge.
    """
    heights = [d.box[3] - d.box[1] for d in detections if d.class_id == WORD]
    if len(heights) < 3:
        return detections
    floor = min_height_ratio * statistics.median(heights)
    return [d for d in detections if d.class_id != WORD or d.box[3] - d.box[1] >= floor]
