"""Text detection as a second source of plate proposals.

The plate detector misses some Hong Kong two-row plates and most black cross-boundary
plates (white characters on black): it was trained on few of either. A general text
detector (PP-OCRv6 small, a DBNet) finds the characters whatever the plate looks like,
at the price of also finding shop signs, slogans and stickers; the recogniser's plate
format rules reject those. :func:`merge_proposals` adds its boxes to the plate
detector's where that one found nothing.

DBNet outputs a per-pixel text probability map. Boxes come from it as in PaddleOCR's
``DBPostProcess`` (parameters as RapidOCR 3.10 ships them for this model): threshold
the map, take each connected region's minimum-area rectangle, score it by the mean
probability inside, and grow it back by the margin the network was trained to shrink
text by. Pre- and post-processing are pure numpy/cv2 functions, testable without a model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.recognition.detect import BaseDetector, DetectorTimes, shrink
from edge.recognition.runtime import create_session
from edge.types import Detections

DEFAULT_LONGEST = 640
#: The network downsamples by 32: both input sides must be multiples of it.
STRIDE = 32

# RapidOCR's det config for PP-OCRv6: BGR as decoded, scaled to [-1, 1].
MEAN = np.float32(0.5)
STD = np.float32(0.5)

#: A pixel is text where the probability map exceeds this.
PROB_THRESHOLD = 0.3
#: A region is kept when the mean probability inside its rectangle reaches this.
BOX_THRESHOLD = 0.5
#: DBNet is trained on text shrunk by area * (1 - 0.4^2) / perimeter; growing the
#: found region by area * 1.6 / perimeter restores the characters with a small margin.
UNCLIP_RATIO = 1.6
#: Regions whose short side is under this many map pixels are noise.
MIN_SIDE = 3.0
#: Bounds the work on a map full of texture.
MAX_CANDIDATES = 1000

#: Plates of every kind we know are at most about 5:1 (a one-row 520x110 mm plate,
#: characters included); a tighter text box on a tilted plate stays well under 8:1,
#: while a line of signage or a slogan runs longer.
PLATE_MAX_ASPECT = 8.0
#: Plates are wider than high (a square-ish two-row or motorcycle plate is about 1.3:1)
#: and one turned 45 degrees away still shows 0.7 of its width: a box under 0.75:1 is
#: upright text or a pole, not a plate.
PLATE_MIN_ASPECT = 0.75
#: Text lower than this in the image is below what the recogniser reads (its lines are
#: 48 px high; a 12 px plate row is already a fourfold enlargement).
PLATE_MIN_HEIGHT = 12.0

#: Text boxes are scored at most this share of the weakest plate-detector box, so every
#: plate-detector box is read and ranked first.
TEXT_SCORE_SCALE = 0.5


# --- pre-processing ---------------------------------------------------------------


def input_shape(image_hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """Network input (height, width) for an image: its longer side scaled to
    ``longest`` and each side rounded to a multiple of :data:`STRIDE` (the aspect is
    stretched by at most half a stride; boxes are mapped back per axis)."""
    if longest <= 0 or longest % STRIDE:
        raise ValueError(f"input size {longest} is not a positive multiple of {STRIDE}")
    h, w = image_hw
    scale = longest / max(h, w)
    return (
        max(STRIDE, round(h * scale / STRIDE) * STRIDE),
        max(STRIDE, round(w * scale / STRIDE) * STRIDE),
    )


def preprocess(image: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """A BGR uint8 image as the (1, 3, H, W) float32 tensor the model takes."""
    h, w = input_hw
    if (image.shape[0], image.shape[1]) != (h, w):
        if image.shape[0] >= h and image.shape[1] >= w:
            # Area averaging keeps the thin strokes of small, distant text.
            image = shrink(image, (w, h))
        else:
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    tensor = (image.astype(np.float32) * np.float32(1 / 255) - MEAN) / STD
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])


# --- post-processing --------------------------------------------------------------


def db_boxes(
    prob: np.ndarray,
    *,
    threshold: float = PROB_THRESHOLD,
    box_threshold: float = BOX_THRESHOLD,
    unclip_ratio: float = UNCLIP_RATIO,
    min_side: float = MIN_SIDE,
    max_candidates: int = MAX_CANDIDATES,
) -> tuple[np.ndarray, np.ndarray]:
    """Text boxes in a DB probability map (H, W) with values in 0..1.

    Returns axis-aligned xyxy (N, 4) float32 in map pixels, each the bounds of a
    region's grown minimum-area rectangle, and the regions' scores (N,) float32, in no
    particular order.
    """
    if prob.ndim != 2:
        raise ValueError(f"expected an (H, W) probability map, got shape {prob.shape}")
    prob = prob.astype(np.float32, copy=False)
    height, width = prob.shape
    # A 2x2 dilation rejoins characters the threshold split at thin strokes.
    mask = cv2.dilate((prob > threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes, scores = [], []
    for contour in contours[:max_candidates]:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < min_side:
            continue
        corners = cv2.boxPoints(((cx, cy), (rw, rh), angle))
        score = _mean_inside(prob, corners)
        if score < box_threshold:
            continue
        # Offsetting a rectangle outwards by d (PaddleOCR uses a polygon clipper with
        # round joins) gives one whose minimum-area rectangle is 2d longer each way.
        d = rw * rh * unclip_ratio / (2 * (rw + rh))
        if min(rw, rh) + 2 * d < min_side + 2:
            continue
        grown = cv2.boxPoints(((cx, cy), (rw + 2 * d, rh + 2 * d), angle))
        x1, y1 = grown.min(axis=0)
        x2, y2 = grown.max(axis=0)
        boxes.append((max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)))
        scores.append(score)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)


def _mean_inside(prob: np.ndarray, corners: np.ndarray) -> float:
    """Mean of ``prob`` over the quadrilateral ``corners`` (4, 2)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [np.round(corners - (x0, y0)).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def map_to_image(
    xyxy: np.ndarray, map_hw: tuple[int, int], image_hw: tuple[int, int]
) -> np.ndarray:
    """Boxes in probability-map pixels scaled to image pixels (per axis) and clipped."""
    sy, sx = image_hw[0] / map_hw[0], image_hw[1] / map_hw[1]
    out = xyxy.astype(np.float32) * np.array([sx, sy, sx, sy], np.float32)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, image_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, image_hw[0])
    return out


def plate_shaped(
    xyxy: np.ndarray,
    *,
    max_aspect: float = PLATE_MAX_ASPECT,
    min_aspect: float = PLATE_MIN_ASPECT,
    min_height: float = PLATE_MIN_HEIGHT,
) -> np.ndarray:
    """Which boxes (N, 4), in image pixels, could hold a plate or a plate's row:
    between ``min_aspect`` and ``max_aspect`` times as wide as high and at least
    ``min_height`` high."""
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    return (h >= min_height) & (w <= max_aspect * h) & (w >= min_aspect * h)


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every box in ``a`` (N, 4) and every box in ``b`` (M, 4): their intersection
    over union, and the share of the ``a`` box's area inside the ``b`` box; both (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    inside = np.divide(inter, area_a, out=np.zeros_like(inter), where=area_a > 0)
    return iou, inside


def uncovered(
    primary: Detections, extra: Detections, iou: float, *, within: float = 0.5
) -> np.ndarray:
    """Which ``extra`` boxes overlap no ``primary`` box: IoU at most ``iou`` with each,
    and less than ``within`` of their area inside any (IoU misses a state name or a
    registration line inside a plate box, which the plate's own read already covers;
    above 1 this test is off). A boolean mask over ``extra``."""
    if not len(primary) or not len(extra):
        return np.ones(len(extra), bool)
    overlap, inside = _overlaps(extra.xyxy, primary.xyxy)
    return (overlap.max(axis=1) <= iou) & (inside.max(axis=1) < within)


def zoom_regions(xyxy: np.ndarray, context: float) -> np.ndarray:
    """Regions (N, 4) to search for the plate around text boxes (N, 4): centred on
    each box, ``context`` times its width or twice its height, whichever is more
    (a row of a two-row plate is half the plate's height), at the 4:3 aspect of a
    plate with some of its car around it. Not clipped to the image."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    cy = (xyxy[:, 1] + xyxy[:, 3]) / 2
    half = context * np.maximum(xyxy[:, 2] - xyxy[:, 0], 2 * (xyxy[:, 3] - xyxy[:, 1])) / 2
    return np.stack([cx - half, cy - 0.75 * half, cx + half, cy + 0.75 * half], axis=1)


def holding(found: Detections, xyxy: np.ndarray, *, share: float = 0.5) -> Detections:
    """The ``found`` boxes that hold at least ``share`` of the area of some box in
    ``xyxy`` (N, 4)."""
    if not len(found) or not len(xyxy):
        return Detections.empty()
    _, inside = _overlaps(xyxy, found.xyxy)
    return found[inside.max(axis=0) >= share]


def merge_proposals(
    primary: Detections, extra: Detections, iou: float, *, within: float = 0.5
) -> Detections:
    """``primary`` (the plate detector's boxes) followed by the ``extra`` boxes (text
    boxes) that overlap no primary box: IoU at most ``iou`` with each, and less than
    ``within`` of their area inside any (IoU misses a state name or a registration
    line inside a plate box, which the plate's own read already covers; above 1 this
    test is off).

    The added boxes keep their order but their scores are scaled to at most
    :data:`TEXT_SCORE_SCALE` times the weakest primary score (or that share of their
    own where there is no primary box), so they rank after every primary box and lose
    to one in any later NMS. Those scores order proposals; they are not comparable with
    plate-detector scores across images.
    """
    if not len(extra):
        return primary
    keep = uncovered(primary, extra, iou, within=within)
    if not keep.any():
        return primary
    ceiling = float(primary.scores.min()) if len(primary) else 1.0
    added = extra.scores[keep] * np.float32(TEXT_SCORE_SCALE * ceiling)
    order = np.argsort(-added, kind="stable")
    return Detections(
        np.concatenate([primary.xyxy, extra.xyxy[keep][order]]).astype(np.float32),
        np.concatenate([primary.scores, added[order]]).astype(np.float32),
    )


# --- the detector -----------------------------------------------------------------


class TextPlateDetector(BaseDetector):
    """PP-OCRv6 text detection on onnxruntime, as plate proposals.

    Each image runs once with its longer side at ``longest`` (a multiple of 32, small
    images enlarged). ``plate_filter`` drops boxes no plate could give (see
    :func:`plate_shaped`). Boxes are axis-aligned, in image pixels, best score first,
    at most ``max_detections``.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        longest: int = DEFAULT_LONGEST,
        threads: int = 0,
        providers: Sequence[str] = ("cpu",),
        threshold: float = PROB_THRESHOLD,
        box_threshold: float = BOX_THRESHOLD,
        unclip_ratio: float = UNCLIP_RATIO,
        plate_filter: bool = True,
        max_aspect: float = PLATE_MAX_ASPECT,
        min_aspect: float = PLATE_MIN_ASPECT,
        min_height: float = PLATE_MIN_HEIGHT,
        max_detections: int = 50,
    ) -> None:
        input_shape((longest, longest), longest)  # validates longest
        self.longest = int(longest)
        self.threshold = float(threshold)
        self.box_threshold = float(box_threshold)
        self.unclip_ratio = float(unclip_ratio)
        self.plate_filter = bool(plate_filter)
        self.max_aspect = float(max_aspect)
        self.min_aspect = float(min_aspect)
        self.min_height = float(min_height)
        self.max_detections = int(max_detections)
        self.times = DetectorTimes()
        self._session = create_session(Path(model_path), threads=threads, providers=providers)
        self._input_name = self._session.get_inputs()[0].name

    def detect(self, image: np.ndarray) -> Detections:
        if self._session is None:
            raise RuntimeError("detector is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected a non-empty HxWx3 image, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image.dtype}")
        image_hw = (image.shape[0], image.shape[1])
        t0 = time.perf_counter()
        tensor = preprocess(image, input_shape(image_hw, self.longest))
        t1 = time.perf_counter()
        prob = self._session.run(None, {self._input_name: tensor})[0][0, 0]
        t2 = time.perf_counter()
        boxes, scores = db_boxes(
            prob,
            threshold=self.threshold,
            box_threshold=self.box_threshold,
            unclip_ratio=self.unclip_ratio,
        )
        boxes = map_to_image(boxes, prob.shape, image_hw)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if self.plate_filter:
            keep &= plate_shaped(
                boxes,
                max_aspect=self.max_aspect,
                min_aspect=self.min_aspect,
                min_height=self.min_height,
            )
        boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        found = Detections(np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order]))
        t3 = time.perf_counter()
        self.times.runs += 1
        self.times.preprocess_s += t1 - t0
        self.times.infer_s += t2 - t1
        self.times.postprocess_s += t3 - t2
        return found

    def close(self) -> None:
        self._session = None
