"""Word and line detection with an ultralytics YOLOv8 model loaded from a local weights file.

No gRPC here: `Detector.predict(image)` takes a PIL image and returns boxes in its pixels. On a CPU the
network runs on ONNX Runtime (`backend="onnx"`, the default; faster than torch where the service calls it, from
a worker thread: `benchmarks/backends.py`): its graph is exported from the weights through ultralytics when the
detector starts (dynamic input sizes), or read from a serving folder (`python -m services.detector.model
--weights W --out F`: the weights' folder with onnx/ beside them), and then neither torch nor ultralytics is
imported: the page is letterboxed and the boxes suppressed here in numpy as ultralytics does it (tested: the same
boxes as ultralytics on the same graph).

A word box can grow into a weaker box of the detector's own (scored from `extend_score` up to `min_score`)
that holds most of it and no other word: on real ink the detector, trained on synthetic pages, often finds
the x-height body of a word with confidence and the whole word, ascenders and a last letter included, with
less ("wor" of "word").
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import statistics
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from services.common import geometry, onnx_sessions
from services.common.geometry import WORD

logger = logging.getLogger("handwriting.detector")
# Weaker word boxes, scored from EXTEND_SCORE up to the detector's min_score, may grow a word box (see
# `grow_into_weaker`); candidates are kept through NMS at EXTEND_IOU so that boxes over a found word survive.
EXTEND_SCORE = 0.1
EXTEND_IOU = 0.7
# ultralytics' NMS: class-aware by offsetting each class's boxes by this many pixels, at most this many candidates
CLASS_OFFSET = 7680
MAX_CANDIDATES = 30000
PADDING_GREY = 114  # what ultralytics' letterbox pads with


THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS", "MKL_NUM_THREADS")
# the least a small image's canvas spans along its shorter side (px; see Detector._network_input)
SMALL_IMAGE_SIDE = 96


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
    # torch, when ultralytics is what imports it, starts under that OMP_NUM_THREADS=1 too: one thread for torch and
    # for the ONNX Runtime sessions made afterwards (`onnx_sessions.cpu_threads` follows torch), so the detector of a
    # local stack ran its network on one of two cores (33 ms a page against 24). The process's count is put back.
    threads_before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    threads = onnx_sessions.cpu_threads()
    from ultralytics import settings

    for name, value in threads_before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    import torch

    torch.set_num_threads(threads)
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
        self.backend = "onnx" if onnx_sessions.serves(backend, device) else "torch"
        self.device = device
        self.image_size = image_size
        self.min_score = min_score
        self.iou = iou
        self.max_detections = max_detections
        self.extend_score = extend_score
        self.session = self.model = None
        if self.backend == "onnx":
            import onnxruntime

            found = onnx_sessions.read_graphs(weights, (GRAPH,))
            graph, meta = (found[0][GRAPH], found[1]) if found else export_graph(weights, image_size)
            self.stride = meta["stride"]
            # a session that does not spin (its threads would take the cores from what runs next), all cores
            self.session = onnxruntime.InferenceSession(
                graph, onnx_sessions.session_options(), providers=onnx_sessions.PROVIDERS
            )
            self.predict(Image.new("RGB", (image_size, image_size), (255, 255, 255)))  # lazy initialisation
        else:
            with _ultralytics():
                from ultralytics import YOLO

                self.model = YOLO(str(weights), task="detect")
                self.stride = int(max(self.model.model.stride))
                # one warm-up pass so the first request does not pay for lazy initialisation
                self.predict(Image.new("RGB", (image_size, image_size), (255, 255, 255)))
        logger.info(
            "detector loaded",
            extra={"weights": str(weights), "device": device, "backend": self.backend, "graph": bool(self.session)},
        )

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
            found = self._boxes(
                [inputs[i] for i in members],
                conf=self.extend_score if extend else floor,
                iou=max(self.iou, EXTEND_IOU) if extend else self.iou,
                max_det=self.max_detections * (3 if extend else 1),
            )
            for i, boxes in zip(members, found, strict=True):
                results[i] = self._detections(*boxes, pages[i][0].size, floor, extend)
        return results

    def _network_input(self, image: Image.Image) -> np.ndarray:
        """The page as an RGB array, at least image_size on its longer side."""
        rgb = image.convert("RGB")
        if max(rgb.size) < self.image_size:
            # never upscale: a small image (one line, one word) would get letters the size of words.
            # Pad it onto a white canvas instead, image_size along its longer side (the letterbox keeps its scale)
            # and its own size along the other, to the stride, at least SMALL_IMAGE_SIDE (a line's image was
            # padded to 640 x 640: 49 ms of network where this takes 11, reading as well or better: detector
            # card, "Small images"); boxes stay in the image's own coordinates.
            width, height = rgb.size
            short = max(-(-min(width, height) // self.stride) * self.stride, SMALL_IMAGE_SIDE)
            size = (self.image_size, short) if width >= height else (short, self.image_size)
            canvas = Image.new("RGB", size, (255, 255, 255))
            canvas.paste(rgb, (0, 0))
            rgb = canvas
        return np.asarray(rgb)

    def _boxes(self, arrays: list[np.ndarray], conf: float, iou: float, max_det: int) -> list[tuple]:
        """Each image's boxes (xyxy in its pixels, float32), scores and classes after NMS, as ultralytics' predict
        gives them for images of one shape."""
        if self.session is None:
            found = self.model.predict(
                [array[:, :, ::-1] for array in arrays],  # ultralytics takes numpy arrays as BGR
                imgsz=self.image_size,
                conf=conf,
                iou=iou,
                max_det=max_det,
                device=self.device,
                verbose=False,
            )
            return [
                (r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy().astype(np.int64))
                for r in found
            ]
        batch = np.stack([letterbox(array, self.image_size, self.stride) for array in arrays])
        pixels = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)
        (predictions,) = self.session.run(None, {self.session.get_inputs()[0].name: pixels})
        return [
            suppress(prediction, conf, iou, max_det, pixels.shape[2:], array.shape[:2])
            for prediction, array in zip(predictions, arrays, strict=True)
        ]

    def _detections(
        self, xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, size, floor: float, extend: bool
    ) -> list[Detection]:
        width, height = size
        xyxy = xyxy.copy()
        xyxy[:, 2] = np.minimum(xyxy[:, 2], width)
        xyxy[:, 3] = np.minimum(xyxy[:, 3], height)
        sure = np.flatnonzero(scores >= floor)
        if extend:  # the boxes the detector keeps at its own score and NMS (lower scores never suppress higher)
            sure = sure[batched_nms(xyxy[sure], scores[sure], classes[sure], self.iou)]
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


def letterbox(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """ultralytics' letterbox for a batch of one shape: the image resized by the ratio that fits it in `size` x
    `size` (OpenCV's bilinear), then padded grey to a multiple of `stride`, centred."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_width, new_height = max(round(width * ratio), 1), max(round(height * ratio), 1)
    pad_x, pad_y = (size - new_width) % stride / 2, (size - new_height) % stride / 2
    if (width, height) != (new_width, new_height):
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = round(pad_y - 0.1), round(pad_y + 0.1), round(pad_x - 0.1), round(pad_x + 0.1)
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PADDING_GREY,) * 3)


def suppress(prediction: np.ndarray, conf: float, iou: float, max_det: int, network_shape, image_shape) -> tuple:
    """ultralytics' NMS and box scaling for one image: `prediction` (4 + classes, anchors) of boxes (centre x, y,
    width, height) and class scores on the letterboxed input of `network_shape` -> boxes (xyxy) in the image of
    `image_shape` (height, width), scores, classes; best first."""
    x = prediction.T
    x = x[x[:, 4:].max(axis=1) > conf]
    boxes = np.concatenate([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], axis=1)
    scores, classes = x[:, 4:].max(axis=1), x[:, 4:].argmax(axis=1)
    if len(scores) > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    keep = nms(boxes + classes[:, None].astype(np.float32) * np.float32(CLASS_OFFSET), scores, iou)[:max_det]
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    # from the letterboxed input back to the image (ultralytics' scale_boxes)
    (network_height, network_width), (height, width) = network_shape, image_shape
    gain = min(network_height / height, network_width / width)
    new_height, new_width = max(round(height * gain), 1), max(round(width * gain), 1)
    pad_x, pad_y = round((network_width - new_width) / 2 - 0.1), round((network_height - new_height) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / (new_width / width)).clip(0, width)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / (new_height / height)).clip(0, height)
    return boxes, scores, classes.astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (xyxy) that greedy non-maximum suppression keeps, best score first: a box goes when
    its IoU with a better kept box exceeds `iou` (torchvision's nms)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        left, top = np.maximum(boxes[best, :2], boxes[rest, :2]).T
        right, bottom = np.minimum(boxes[best, 2:], boxes[rest, 2:]).T
        inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            order = rest[~(inter / (areas[best] + areas[rest] - inter) > iou)]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """NMS within each class (torchvision's batched_nms: each class's boxes moved apart), best score first."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    offsets = classes.astype(boxes.dtype) * (boxes.max() + boxes.dtype.type(1))
    return nms(boxes + offsets[:, None], scores, iou)


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


GRAPH = "detector"


@contextmanager
def _ultralytics():
    """ultralytics, offline, leaving torch's threads as they were: it sets them to cores - 1 when it picks a CPU
    device (1 on two cores); the process's setting (all cores, or HW_TORCH_THREADS) is put back afterwards."""
    configure_ultralytics_offline()
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def export_graph(weights: Path, image_size: int) -> tuple[bytes, dict]:
    """The network of `weights` as ONNX (dynamic batch and size, no simplifier) and what running it needs."""
    # (found, not imported: importing ultralytics before `configure_ultralytics_offline` changes the environment)
    if importlib.util.find_spec("ultralytics") is None:  # an image without torch and ultralytics
        raise RuntimeError(
            f"{weights.parent} holds no exported graph (onnx/), and ultralytics is not installed here: export it "
            f"where it is, with python -m services.detector.model --weights {weights} --out {weights.parent}"
        )
    with _ultralytics(), tempfile.TemporaryDirectory(prefix="detector-onnx-") as folder:
        from ultralytics import YOLO

        copy = Path(folder) / weights.name  # the weights' own folder may be read-only
        shutil.copy(weights, copy)
        model = YOLO(str(copy), task="detect")
        stride = int(max(model.model.stride))
        exported = model.export(format="onnx", imgsz=image_size, dynamic=True, simplify=False, verbose=False)
        return Path(exported).read_bytes(), {"stride": stride, "names": model.names, "image_size": image_size}


def write_serving_folder(weights: Path, out: Path, image_size: int = 640) -> Path:
    """Copy the weights' folder to `out` and write the graph into `out`/onnx (what the CPU image serves)."""
    if out.resolve() != weights.parent.resolve():
        shutil.copytree(weights.parent, out, dirs_exist_ok=True)
    graph, meta = export_graph(weights, image_size)
    return onnx_sessions.write_graphs(out / weights.name, {GRAPH: graph}, meta)


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


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a serving folder: the detector's folder and its ONNX graph.")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True, help="the serving folder (may be the weights' folder)")
    parser.add_argument("--image-size", type=int, default=640)
    args = parser.parse_args()
    print(write_serving_folder(Path(args.weights), Path(args.out), args.image_size))


if __name__ == "__main__":
    main()
