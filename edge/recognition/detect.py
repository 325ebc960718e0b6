"""Plate detection: a YOLOv8 ONNX model wrapped behind a one-method interface.

Pre- and post-processing are pure numpy functions (letterbox, decode, NMS, mapping
boxes back) so they can be tested without a model.

The shipped model (YOLOv8s-seg) is exported at a fixed 640x640 and also computes
segmentation masks we never use. :func:`make_dynamic_detector` derives a
detection-only model whose input height and width are free (multiples of 32): a
16:9 camera frame then runs at 384x640 instead of a mostly grey 640x640 square.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from edge.recognition.runtime import create_session
from edge.types import Detections

PAD_VALUE = 114
STRIDES = (8, 16, 32)
# The largest stride: every input side must be a multiple of it.
MAX_STRIDE = max(STRIDES)
DEFAULT_INPUT_SIZE = 640

# Output names of a model made by make_dynamic_detector.
DISTANCES_OUTPUT = "distances"
SCORES_OUTPUT = "scores"

Size = int | tuple[int, int]


#: Neighbouring tiles share this share of the tile's side, so a plate up to a quarter
#: of a tile wide lies wholly inside at least one tile.
TILE_OVERLAP = 0.25


#: Tiles are searched only when they see plates at least this much larger than the
#: whole-image search does (the image's longer side over the tile's): a 1280 px photo
#: in 1024 tiles gains a quarter, for four more searches, and the tiles' boxes then
#: cost real US photos 6 exact reads of 222 for none gained.
TILE_GAIN = 1.5


#: The detector draws a plate cut by a tile's side a few pixels short of that side
#: (a 12 MP photo's UZ6748 boxed to 3 px from it and read UZ674): within this share of
#: the tile of a side, a box is taken as cut. Plates up to a fifth of a tile wide still
#: lie that far inside some tile (tiles overlap by a quarter); wider ones the search of
#: the whole image finds.
TILE_EDGE = 0.02


def tile_regions(image_hw: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """Overlapping ``tile`` x ``tile`` regions (x1, y1, x2, y2) covering an image of
    ``image_hw``, evenly spread, sharing at least :data:`TILE_OVERLAP` of a side; a
    side no longer than ``tile`` is one tile of its own length."""

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        k = math.ceil((n - tile) / ((1 - TILE_OVERLAP) * tile)) + 1
        return [round(i * (n - tile) / (k - 1)) for i in range(k)]

    height, width = image_hw
    return [
        (x, y, min(width, x + tile), min(height, y + tile))
        for y in starts(height)
        for x in starts(width)
    ]


# --- pre-processing ---------------------------------------------------------------


# A box this close to a search region's side is taken as cut by it.
REGION_EDGE_PX = 2.0


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` reduced to ``size`` (width, height) by area averaging.

    Area averaging keeps the small strokes of a distant plate that point sampling
    would alias away, but OpenCV's general (non-integer) INTER_AREA is slow: 6-7 ms
    from 1080p to 512x288. Halving first (its exact 2x2 mean has a fast path, 0.4 ms
    on 1080p) and averaging the remaining factor costs a third of that, and a 2x2
    mean followed by an area average is itself an area average of the original.
    """
    width, height = size
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        half = (image.shape[1] // 2, image.shape[0] // 2)
        # An odd last row or column is dropped: at most one source pixel of 2x+.
        image = cv2.resize(image[: half[1] * 2, : half[0] * 2], half, interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def letterbox(
    image: np.ndarray, size: Size, *, one_step: bool = False
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit a BGR image into ``size`` (int or (height, width)) keeping its aspect.

    Shrinking uses :func:`shrink`; ``one_step`` uses a single INTER_AREA resize
    instead (what the INT8 model was calibrated with: its pinned bytes depend on it).

    Returns the (1, 3, H, W) float32 RGB tensor in 0..1, the scale applied and the
    (x, y) padding added on the left and top.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty HxWx3 image, got shape {image.shape}")
    out_h, out_w = _hw(size)
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_w = min(out_w, max(1, round(w * scale)))
    new_h = min(out_h, max(1, round(h * scale)))
    pad_x = (out_w - new_w) // 2
    pad_y = (out_h - new_h) // 2
    if (new_w, new_h) != (w, h):
        if scale >= 1:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        elif one_step:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        else:
            image = shrink(image, (new_w, new_h))
    canvas = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = image
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    tensor *= np.float32(1 / 255)
    return tensor, scale, (pad_x, pad_y)


def fit_input_shape(
    image_hw: tuple[int, int], longest: int, stride: int = MAX_STRIDE
) -> tuple[int, int]:
    """The smallest stride-aligned (height, width) holding the image scaled so its
    longest side is ``longest`` ("rectangular" letterbox for variable-input models)."""
    if longest % stride:
        raise ValueError(f"input size {longest} is not a multiple of {stride}")
    h, w = image_hw
    scale = longest / max(h, w)

    def side(n: int) -> int:
        return max(stride, -(-round(n * scale) // stride) * stride)

    return min(longest, side(h)), min(longest, side(w))


# --- post-processing --------------------------------------------------------------


def decode_yolo(
    output: np.ndarray, score_threshold: float, *, num_classes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores above the threshold from a YOLOv8 head output.

    ``output`` is (1, C, N) or (C, N) with rows cx, cy, w, h, class scores, then
    anything else (mask coefficients), in input pixels. Returns xyxy (M, 4) and
    scores (M,), both float32, in no particular order.
    """
    out = output[0] if output.ndim == 3 else output
    if out.ndim != 2 or out.shape[0] < 4 + num_classes:
        raise ValueError(f"unexpected detector output shape {output.shape}")
    class_scores = out[4 : 4 + num_classes]
    scores = class_scores.max(axis=0) if num_classes > 1 else class_scores[0]
    keep = scores > score_threshold
    cx, cy, w, h = out[:4, keep].astype(np.float32)
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy.astype(np.float32), scores[keep].astype(np.float32)


def make_anchors(
    input_hw: tuple[int, int], strides: Sequence[int] = STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """Grid-cell centres (N, 2) in grid units and their strides (N,), in the order
    YOLOv8 flattens its three heads (stride 8 first, row-major within a head)."""
    h, w = input_hw
    points, point_strides = [], []
    for s in strides:
        ys, xs = np.mgrid[0 : h // s, 0 : w // s].astype(np.float32) + 0.5
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        point_strides.append(np.full(xs.size, s, np.float32))
    return np.concatenate(points), np.concatenate(point_strides)


def decode_distances(
    distances: np.ndarray,
    scores: np.ndarray,
    input_hw: tuple[int, int],
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes from a dynamic model's raw outputs: ``distances`` (1, 4, N) left, top,
    right, bottom from each grid-cell centre in grid units, ``scores`` (1, 1, N).
    Returns xyxy (M, 4) in input pixels and scores (M,), float32."""
    dist = distances.reshape(4, -1)
    score = scores.reshape(-1, dist.shape[1]).max(axis=0)
    points, strides = make_anchors(input_hw)
    if points.shape[0] != dist.shape[1]:
        raise ValueError(
            f"model gave {dist.shape[1]} boxes; a {input_hw} input has {points.shape[0]} cells"
        )
    keep = score > score_threshold
    ltrb = dist[:, keep].T.astype(np.float32)
    centres, s = points[keep], strides[keep, None]
    xyxy = np.concatenate([centres - ltrb[:, :2], centres + ltrb[:, 2:]], axis=1) * s
    return xyxy.astype(np.float32), score[keep].astype(np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of ``boxes``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        best = order[0]
        kept.append(int(best))
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def unletterbox(
    xyxy: np.ndarray, scale: float, pad: tuple[int, int], image_hw: tuple[int, int]
) -> np.ndarray:
    """Map boxes from letterboxed input pixels back to the original image, clipped."""
    pad_x, pad_y = pad
    out = (xyxy.astype(np.float32) - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)) / scale
    h, w = image_hw
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


# --- model derivation -------------------------------------------------------------


def make_dynamic_detector(src: Path, dst: Path) -> Path:
    """Derive a detection-only model with a free input height and width from the
    exported YOLOv8(-seg) model at ``src``; write it to ``dst``.

    The export bakes the 640x640 anchor count into the DFL Reshapes and the anchor
    and stride constants. We free the Reshapes, stop the graph at the per-cell box
    distances and class scores (anchors are added in numpy by
    :func:`decode_distances`) and drop the mask branch. Same input, same bytes.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}

    head = producers.get(graph.output[0].name)
    if head is None or head.op_type != "Concat" or len(head.input) < 2:
        raise ValueError(f"{src}: output0 is not the YOLOv8 head Concat this expects")
    n_cells = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    scores_src = head.input[1]
    if producers[scores_src].op_type != "Sigmoid":
        raise ValueError(f"{src}: the head's class scores do not come from a Sigmoid")

    # Reshapes whose target shape spells out the fixed cell count: the DFL ones.
    distances_src = None
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.size and shape[-1] == n_cells:
            shape = shape.copy()
            shape[-1] = -1
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
            if shape.size == 3:  # (1, 4, cells): the distances after the DFL conv
                distances_src = node.output[0]
    if distances_src is None:
        raise ValueError(f"{src}: found no DFL Reshape to (1, 4, {n_cells})")

    elem_type = graph.output[0].type.tensor_type.elem_type
    graph.node.append(helper.make_node("Identity", [distances_src], [DISTANCES_OUTPUT]))
    graph.node.append(helper.make_node("Identity", [scores_src], [SCORES_OUTPUT]))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(DISTANCES_OUTPUT, elem_type, [1, 4, "cells"]),
            helper.make_tensor_value_info(SCORES_OUTPUT, elem_type, [1, None, "cells"]),
        ]
    )
    _prune(graph)
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.Clear()
        dim.dim_param = name
    del graph.value_info[:]
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def _prune(graph) -> None:
    """Drop nodes and initializers the graph outputs do not depend on."""
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# --- detectors --------------------------------------------------------------------


@dataclass(slots=True)
class DetectorTimes:
    """Where a detector's time goes, summed over calls (seconds): a few
    ``time.perf_counter`` reads per network run, cheap enough to stay always on.

    Shared by every caller of the detector (both cameras); a caller wanting its own
    share takes a :meth:`snapshot` before and after its call.
    """

    #: Network runs (a whole frame, or one search region).
    runs: int = 0
    #: Resize and letterbox into the input tensor (and the dtype cast).
    preprocess_s: float = 0.0
    #: ``InferenceSession.run``.
    infer_s: float = 0.0
    #: Decoding the raw outputs, mapping boxes back, region-edge filtering and NMS.
    postprocess_s: float = 0.0

    def snapshot(self) -> tuple[int, float, float, float]:
        return self.runs, self.preprocess_s, self.infer_s, self.postprocess_s

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, type(getattr(self, f.name))())


class BaseDetector(ABC):
    """Finds plate boxes in whole images."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> Detections:
        """Plate boxes in a BGR uint8 HxWx3 image, in its pixel coordinates."""

    def detect_regions(
        self,
        image: np.ndarray,
        regions: Sequence[Sequence[int]],
        longest: int,
        *,
        enlarge: bool = False,
    ) -> Detections:
        """Plate boxes found inside ``regions`` (x1, y1, x2, y2) of ``image``, in image
        coordinates. This fallback runs :meth:`detect` on each region as an image (at
        the detector's own input size, so ``longest`` and ``enlarge`` have no effect);
        detectors that can run smaller inputs do it cheaper."""
        boxes, scores = [], []
        for x1, y1, x2, y2 in (tuple(int(v) for v in r) for r in regions):
            x1, y1 = max(0, x1), max(0, y1)
            found = self.detect(image[y1:y2, x1:x2])
            boxes.append(found.xyxy + np.array([x1, y1, x1, y1], np.float32))
            scores.append(found.scores)
        if not boxes:
            return Detections.empty()
        order = np.argsort(-np.concatenate(scores), kind="stable")
        return Detections(np.concatenate(boxes)[order], np.concatenate(scores)[order])

    def detect_weak(self, image: np.ndarray, floor: float) -> tuple[Detections, Detections]:
        """The boxes :meth:`detect` gives, and apart from them the weaker boxes it would
        give were its score threshold ``floor``: places worth a second look. This
        fallback has no weaker boxes."""
        return self.detect(image), Detections.empty()

    def close(self) -> None:  # noqa: B027 - detectors without resources need nothing here
        """Release the detector's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class YoloPlateDetector(BaseDetector):
    """A single-class YOLOv8 plate detector on onnxruntime.

    Works with the exported fixed-size model (output0 = boxes, scores, mask
    coefficients) and with one made by :func:`make_dynamic_detector`.
    ``input_size`` is the network input: (height, width), or an int. For a
    fixed-size model it must match the model (or be None). For a dynamic model an
    int is the longest side and each image gets the smallest stride-aligned
    rectangle around it (384x640 for 16:9); a tuple fixes the shape. ``tile``: an
    image whose longer side exceeds it :data:`TILE_GAIN` times is also searched in
    overlapping tiles of that side (see :func:`tile_regions`), each at the input size,
    so the plates of a large photo or a long strip are not shrunk out of the
    detector's reach; 0 never tiles.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        threads: int = 0,
        providers: Sequence[str] = ("cpu",),
        max_detections: int = 50,
        input_size: Size | None = None,
        tile: int = 0,
    ) -> None:
        self.score_threshold = float(score_threshold)
        self.tile = int(tile)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.times = DetectorTimes()
        self._session = create_session(Path(model_path), threads=threads, providers=providers)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        outputs = [o.name for o in self._session.get_outputs()]
        self._dynamic_outputs = outputs[:2] == [DISTANCES_OUTPUT, SCORES_OUTPUT]
        self._output_names = outputs[:2] if self._dynamic_outputs else outputs[:1]

        fixed = [d if isinstance(d, int) else None for d in model_input.shape[2:4]]
        if None not in fixed:
            model_hw = (fixed[0], fixed[1])
            if input_size is not None and _hw(input_size) != model_hw:
                raise ValueError(
                    f"{model_path} takes a fixed {model_hw[0]}x{model_hw[1]} input; "
                    f"input_size={input_size} needs a model from make_dynamic_detector"
                )
            self.input_size: Size = model_hw
        else:
            size = DEFAULT_INPUT_SIZE if input_size is None else input_size
            for side in _hw(size):
                if side <= 0 or side % MAX_STRIDE:
                    raise ValueError(f"input sides must be multiples of {MAX_STRIDE}, got {size}")
            self.input_size = size

    def input_shape(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input (height, width) used for an image of this size."""
        if isinstance(self.input_size, int):
            return fit_input_shape(image_hw, self.input_size)
        return self.input_size

    def detect(self, image: np.ndarray) -> Detections:
        return self._detect(image, self.score_threshold)

    def detect_weak(self, image: np.ndarray, floor: float) -> tuple[Detections, Detections]:
        # NMS takes boxes best first, so a weak box never suppresses a strong one: the
        # strong boxes are exactly those detect() gives.
        every = self._detect(image, min(floor, self.score_threshold))
        strong = every.scores > self.score_threshold
        return every[strong], every[~strong]

    def _detect(self, image: np.ndarray, threshold: float) -> Detections:
        boxes, scores = self._candidates(image, self.input_shape(image.shape[:2]), threshold)
        if (
            self.tile
            and max(image.shape[:2]) > TILE_GAIN * self.tile
            and isinstance(self.input_size, int)
        ):
            tiled = self.detect_regions(
                image,
                tile_regions(image.shape[:2], self.tile),
                self.input_size,
                edge_px=TILE_EDGE * self.tile,
                threshold=threshold,
            )
            boxes, scores = (
                np.concatenate([boxes, tiled.xyxy]),
                np.concatenate([scores, tiled.scores]),
            )
        return self._select(boxes, scores)

    def detect_regions(
        self,
        image: np.ndarray,
        regions: Sequence[Sequence[int]],
        longest: int,
        *,
        edge_px: float = REGION_EDGE_PX,
        enlarge: bool = False,
        threshold: float | None = None,
    ) -> Detections:
        """Plate boxes inside ``regions`` (x1, y1, x2, y2 pixel rectangles) only, in image
        coordinates. Each region runs at a network input whose longest side is at most
        ``longest`` (enlarged to it only with ``enlarge``: a small region around a
        distant plate is then seen larger), so a few regions around known plates cost a
        fraction of the whole frame. Overlapping regions' boxes are merged by NMS. A box
        within ``edge_px`` of a region's side inside the image is taken as cut by it.
        ``threshold`` stands in for the detector's score threshold."""
        if not isinstance(self.input_size, int):
            # A fixed-size model runs every region at its full size: one whole-frame
            # pass is cheaper than several of those.
            return self.detect(image)
        height, width = image.shape[:2]
        all_boxes, all_scores = [], []
        for region in regions:
            x1, y1, x2, y2 = (int(v) for v in region)
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
            crop = image[y1:y2, x1:x2]
            if crop.shape[0] < MAX_STRIDE or crop.shape[1] < MAX_STRIDE:
                continue
            side = (
                longest
                if enlarge
                else min(longest, -(-max(crop.shape[:2]) // MAX_STRIDE) * MAX_STRIDE)
            )
            boxes, scores = self._candidates(crop, fit_input_shape(crop.shape[:2], side), threshold)
            if not len(scores):
                continue
            started = time.perf_counter()
            # A plate cut by the region's edge (not the frame's) is only part of a plate
            # and would read as a shorter one; the next whole-frame scan sees it whole.
            cut = np.zeros(len(scores), bool)
            if x1 > 0:
                cut |= boxes[:, 0] <= edge_px
            if y1 > 0:
                cut |= boxes[:, 1] <= edge_px
            if x2 < width:
                cut |= boxes[:, 2] >= crop.shape[1] - edge_px
            if y2 < height:
                cut |= boxes[:, 3] >= crop.shape[0] - edge_px
            if np.any(~cut):
                all_boxes.append(boxes[~cut] + np.array([x1, y1, x1, y1], np.float32))
                all_scores.append(scores[~cut])
            self.times.postprocess_s += time.perf_counter() - started
        if not all_scores:
            return Detections.empty()
        started = time.perf_counter()
        boxes = np.concatenate(all_boxes)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.shape[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.shape[0])
        self.times.postprocess_s += time.perf_counter() - started
        return self._select(boxes, np.concatenate(all_scores))

    def _candidates(
        self, image: np.ndarray, input_hw: tuple[int, int], threshold: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every box above the score threshold (``threshold`` when given), in ``image``
        coordinates, before NMS."""
        if threshold is None:
            threshold = self.score_threshold
        if self._session is None:
            raise RuntimeError("detector is closed")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image.dtype}")
        image_hw = (image.shape[0], image.shape[1])
        times = self.times
        t0 = time.perf_counter()
        tensor, scale, pad = letterbox(image, input_hw)
        tensor = tensor.astype(self._dtype, copy=False)
        t1 = time.perf_counter()
        outputs = self._session.run(self._output_names, {self._input_name: tensor})
        t2 = time.perf_counter()
        if self._dynamic_outputs:
            boxes, scores = decode_distances(outputs[0], outputs[1], input_hw, threshold)
        else:
            boxes, scores = decode_yolo(outputs[0], threshold)
        if len(scores):
            boxes = unletterbox(boxes, scale, pad, image_hw)
        t3 = time.perf_counter()
        times.runs += 1
        times.preprocess_s += t1 - t0
        times.infer_s += t2 - t1
        times.postprocess_s += t3 - t2
        return boxes, scores

    def _select(self, boxes: np.ndarray, scores: np.ndarray) -> Detections:
        if not len(scores):
            return Detections.empty()
        started = time.perf_counter()
        keep = nms(boxes, scores, self.iou_threshold)[: self.max_detections]
        boxes, scores = boxes[keep], scores[keep]
        # Boxes wholly in the padding collapse to zero size once clipped.
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        found = Detections(np.ascontiguousarray(boxes[real]), np.ascontiguousarray(scores[real]))
        self.times.postprocess_s += time.perf_counter() - started
        return found

    def close(self) -> None:
        self._session = None
