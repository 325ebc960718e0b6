from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.recognition.detect import (
    PAD_VALUE,
    BaseDetector,
    YoloPlateDetector,
    box_iou,
    decode_distances,
    decode_yolo,
    fit_input_shape,
    letterbox,
    make_anchors,
    make_dynamic_detector,
    nms,
    shrink,
    tile_regions,
    unletterbox,
)
from edge.synth.scenes import random_hk_plate, render_scene
from edge.types import Detections
from tests.conftest import model_path


def _bright_box(tensor: np.ndarray) -> np.ndarray:
    """Bounding box (x1, y1, x2, y2, pixel edges) of the pure-white pixels of a tensor."""
    ys, xs = np.nonzero((tensor[0] > 0.99).all(axis=0))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize(
    ("image_hw", "size"),
    [
        ((720, 1280), 640),  # landscape
        ((1280, 720), 640),  # portrait
        ((480, 640), (384, 640)),  # 4:3 into a landscape input
        ((300, 200), 640),  # small portrait: upscaled
    ],
)
def test_letterbox_round_trip(image_hw, size):
    h, w = image_hw
    image = np.zeros((h, w, 3), np.uint8)
    box = np.array([w * 0.3, h * 0.55, w * 0.6, h * 0.7]).round().astype(int)
    image[box[1] : box[3], box[0] : box[2]] = 255
    tensor, scale, pad = letterbox(image, size)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    assert tensor.shape == (1, 3, out_h, out_w) and tensor.dtype == np.float32
    found = _bright_box(tensor)
    back = unletterbox(found[None], scale, pad, (h, w))[0]
    # One input pixel is 1/scale image pixels; allow that much resampling slack.
    np.testing.assert_allclose(back, box, atol=1.5 / scale + 0.5)


def test_letterbox_pads_grey_and_swaps_to_rgb():
    image = np.zeros((100, 400, 3), np.uint8)
    image[:, :, 0] = 255  # pure blue in BGR
    tensor, scale, pad = letterbox(image, 640)
    assert scale == pytest.approx(1.6)
    assert pad == (0, 240)
    assert tensor[0, :, 0, 0] == pytest.approx([PAD_VALUE / 255] * 3)
    assert tensor[0, :, 320, 320] == pytest.approx([0, 0, 1])  # RGB order
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8), 640)


def test_fit_input_shape_is_stride_aligned_rectangle():
    assert fit_input_shape((720, 1280), 640) == (384, 640)
    assert fit_input_shape((1080, 1920), 640) == (384, 640)
    assert fit_input_shape((1280, 720), 640) == (640, 384)
    assert fit_input_shape((480, 640), 640) == (480, 640)
    assert fit_input_shape((500, 500), 320) == (320, 320)
    with pytest.raises(ValueError):
        fit_input_shape((720, 1280), 600)


def test_decode_yolo_on_a_hand_made_output():
    out = np.zeros((1, 37, 6), np.float16)
    out[0, :5, 1] = [100, 200, 40, 10, 0.9]
    out[0, :5, 4] = [300, 300, 80, 20, 0.3]
    out[0, :5, 5] = [50, 50, 20, 20, 0.2]  # below the threshold
    out[0, 5:, :] = 7  # mask coefficients must not count as scores
    boxes, scores = decode_yolo(out, 0.25)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    np.testing.assert_allclose(boxes, [[80, 195, 120, 205], [260, 290, 340, 310]])
    np.testing.assert_allclose(scores, [0.9, 0.3], atol=1e-3)
    empty_boxes, empty_scores = decode_yolo(out, 0.95)
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_anchors_follow_yolov8_order():
    points, strides = make_anchors((64, 96))
    assert len(points) == 8 * 12 + 4 * 6 + 2 * 3
    np.testing.assert_array_equal(points[:2], [[0.5, 0.5], [1.5, 0.5]])
    np.testing.assert_array_equal(points[12], [0.5, 1.5])  # second row of stride 8
    assert strides[0] == 8 and strides[96] == 16 and strides[-1] == 32
    np.testing.assert_array_equal(points[-1], [2.5, 1.5])


def test_decode_distances_on_a_hand_made_output():
    points, _ = make_anchors((64, 64))
    dist = np.zeros((1, 4, len(points)), np.float32)
    scores = np.zeros((1, 1, len(points)), np.float32)
    cell = 2 * 8 + 3  # stride 8, row 2, column 3: centre (3.5, 2.5) cells
    dist[0, :, cell] = [1, 1, 2, 1]
    scores[0, 0, cell] = 0.8
    last = len(points) - 1  # stride 32, centre (1.5, 1.5) cells
    dist[0, :, last] = [0.5, 0.25, 0.5, 0.25]
    scores[0, 0, last] = 0.6
    boxes, kept = decode_distances(dist, scores, (64, 64), 0.5)
    np.testing.assert_allclose(boxes, [[20, 12, 44, 28], [32, 40, 64, 56]])
    np.testing.assert_allclose(kept, [0.8, 0.6])
    with pytest.raises(ValueError):
        decode_distances(dist, scores, (96, 64), 0.5)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array(
        [
            [0, 0, 100, 20],
            [2, 1, 102, 21],  # IoU ~0.87 with the first
            [200, 0, 300, 20],
            [50, 0, 150, 20],  # IoU 0.33 with the first: kept at 0.45
        ],
        np.float32,
    )
    scores = np.array([0.7, 0.9, 0.5, 0.6], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


def test_box_iou_values():
    ious = box_iou(
        np.array([0, 0, 10, 10], np.float32),
        np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32),
    )
    np.testing.assert_allclose(ious, [1.0, 1 / 3, 0.0], atol=1e-6)


def test_unletterbox_clips_to_the_image():
    boxes = np.array([[-50, 10, 700, 300]], np.float32)
    back = unletterbox(boxes, 0.5, (0, 140), (720, 1280))
    np.testing.assert_allclose(back, [[0, 0, 1280, 320]])


def test_base_detector_is_a_context_manager():
    class Fixed(BaseDetector):
        closed = False

        def detect(self, image):
            return Detections.empty()

        def close(self):
            self.closed = True

    with Fixed() as det:
        assert len(det.detect(np.zeros((4, 4, 3), np.uint8))) == 0
    assert det.closed


# --- with the real model ----------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    with YoloPlateDetector(model_path("platedet.onnx"), threads=2) as det:
        yield det


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("models") / "platedet-dynamic.onnx"
    return make_dynamic_detector(model_path("platedet.onnx"), dst)


def _assert_finds(detections: Detections, truths, min_iou: float = 0.5) -> None:
    assert len(detections) >= len(truths)
    assert np.all(np.diff(detections.scores) <= 0), "rows sorted by score"
    for text, box in truths:
        best = box_iou(np.array(box, np.float32), detections.xyxy).max()
        assert best > min_iou, f"{text} at {box}: best IoU {best:.2f}"


@pytest.mark.parametrize("seed", [0, 1])
def test_detects_synthetic_plates(detector, seed):
    rng = np.random.default_rng(seed)
    texts = [random_hk_plate(rng) for _ in range(1 + seed)]
    image, truths = render_scene(texts, rng=rng)
    _assert_finds(detector.detect(image), truths)


def test_detects_in_a_portrait_image(detector):
    image, truths = render_scene(["AB1234"], size=(720, 1280), rng=np.random.default_rng(11))
    _assert_finds(detector.detect(image), truths)


def test_empty_scene_gives_no_boxes(detector):
    grey = np.full((720, 1280, 3), 120, np.uint8)
    result = detector.detect(grey)
    assert len(result) == 0 and result.xyxy.shape == (0, 4)


def test_fixed_model_refuses_another_input_size():
    with pytest.raises(ValueError, match="make_dynamic_detector"):
        YoloPlateDetector(model_path("platedet.onnx"), input_size=480)


def test_closed_detector_refuses_work():
    det = YoloPlateDetector(model_path("platedet.onnx"), threads=1)
    det.close()
    with pytest.raises(RuntimeError):
        det.detect(np.zeros((64, 64, 3), np.uint8))


def test_dynamic_model_is_deterministic(dynamic_model, tmp_path):
    again = make_dynamic_detector(model_path("platedet.onnx"), tmp_path / "again.onnx")
    assert again.read_bytes() == dynamic_model.read_bytes()


def test_dynamic_model_matches_the_original_at_640(detector, dynamic_model):
    image, _ = render_scene(["AB1234", "K88"], rng=np.random.default_rng(3))
    with YoloPlateDetector(dynamic_model, threads=2, input_size=(640, 640)) as dynamic:
        a, b = detector.detect(image), dynamic.detect(image)
    assert len(a) == len(b) > 0
    for box, score, other_box, other_score in zip(a.xyxy, a.scores, b.xyxy, b.scores, strict=True):
        assert box_iou(box, other_box[None])[0] > 0.98
        assert abs(score - other_score) < 0.01


def test_dynamic_model_runs_rectangular_inputs(dynamic_model):
    with YoloPlateDetector(dynamic_model, threads=2, input_size=640) as det:
        assert det.input_shape((720, 1280)) == (384, 640)
        for seed, size in ((4, (1280, 720)), (5, (720, 1280))):
            rng = np.random.default_rng(seed)
            image, truths = render_scene([random_hk_plate(rng)], size=size, rng=rng)
            _assert_finds(det.detect(image), truths)
    with pytest.raises(ValueError):
        YoloPlateDetector(dynamic_model, input_size=(400, 640))


def test_region_search_finds_the_plate_inside_and_nothing_elsewhere():
    rng = np.random.default_rng(41)
    image, truths = render_scene(
        [random_hk_plate(rng)], size=(1920, 1080), rng=rng, plate_frac=(0.07, 0.09)
    )
    (_, box) = truths[0]
    w = box[2] - box[0]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    around = (int(cx - 1.5 * w), int(cy - 1.5 * w), int(cx + 1.5 * w), int(cy + 1.5 * w))
    elsewhere = (0, 0, int(3 * w), int(3 * w)) if cx > 3 * w else (1920 - int(3 * w), 0, 1920, 400)
    with YoloPlateDetector(model_path("platedet-int8.onnx"), threads=2, input_size=640) as det:
        found = det.detect_regions(image, [around], 256)
        assert box_iou(np.array(box, np.float32), found.xyxy).max(initial=0) > 0.6
        assert len(det.detect_regions(image, [elsewhere], 256)) == 0
        # Two overlapping regions around the same plate give it once.
        shifted = (around[0] + 20, around[1] + 10, around[2] + 20, around[3] + 10)
        assert len(det.detect_regions(image, [around, shifted], 256)) == 1


def unsure_night_scene():
    """A 1080p night scene with one small, blurred plate (KT8821, about 50 px wide)
    the detector draws only a weak box around, and which cannot be read."""
    from edge.synth.hkplates import render_hk_scene

    return render_hk_scene(
        ["KT8821"],
        size=(1920, 1080),
        rng=np.random.default_rng(1),
        plate_frac=(0.025, 0.025),
        night=True,
        blur=1.2,
    )


def test_weak_boxes_come_apart_from_the_ones_detect_gives():
    """A small night plate the detector is unsure of: ``detect`` gives no box, the weak
    boxes hold it, and the strong ones are exactly what ``detect`` gives."""
    image, truths = unsure_night_scene()
    with YoloPlateDetector(model_path("platedet-int8.onnx"), threads=2, input_size=640) as det:
        det.score_threshold = 0.15
        plain = det.detect(image)
        strong, weak = det.detect_weak(image, 0.01)
    np.testing.assert_array_equal(strong.xyxy, plain.xyxy)
    np.testing.assert_array_equal(strong.scores, plain.scores)
    assert len(weak) and np.all((weak.scores > 0.01) & (weak.scores <= 0.15))
    assert box_iou(np.array(truths[0].box, np.float32), plain.xyxy).max(initial=0) < 0.4
    assert box_iou(np.array(truths[0].box, np.float32), weak.xyxy).max() > 0.5


def test_the_base_detectors_weak_boxes_are_none():
    class Fixed(BaseDetector):
        def detect(self, image):
            return Detections(np.float32([[1, 1, 5, 5]]), np.float32([0.9]))

    strong, weak = Fixed().detect_weak(np.zeros((8, 8, 3), np.uint8), 0.01)
    assert len(strong) == 1 and len(weak) == 0


def test_detector_times_its_stages(detector):
    times = detector.times
    times.reset()
    assert times.snapshot() == (0, 0.0, 0.0, 0.0)
    image, _ = render_scene(["AB1234"], rng=np.random.default_rng(7))
    began = time.perf_counter()
    assert len(detector.detect(image)) >= 1
    detector.detect(image)
    wall = time.perf_counter() - began
    runs, pre, infer, post = times.snapshot()
    assert runs == 2
    assert pre > 0 and infer > 0 and post > 0
    assert pre + infer + post <= wall
    times.reset()
    assert times.runs == 0 and times.infer_s == 0.0


@pytest.mark.parametrize(("size", "src"), [((512, 288), (1920, 1080)), ((160, 90), (1921, 1081))])
def test_shrink_is_an_area_average_of_the_original(size, src):
    # A smooth gradient: every area average of it is the same to within rounding.
    xs = np.linspace(0, 255, src[0], dtype=np.float32)
    ys = np.linspace(0, 255, src[1], dtype=np.float32)
    image = np.stack(
        [np.add.outer(ys, xs) / 2, np.tile(xs, (src[1], 1)), np.tile(ys[:, None], (1, src[0]))],
        axis=2,
    )
    image = image.round().astype(np.uint8)
    got = shrink(image, size)
    direct = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - direct.astype(int)).max() <= 2


def test_tiles_cover_the_image_with_overlap():
    assert tile_regions((600, 800), 1024) == [(0, 0, 800, 600)]
    tiles = tile_regions((538, 5000), 1024)
    assert tiles[0] == (0, 0, 1024, 538) and tiles[-1] == (3976, 0, 5000, 538)
    for (a, *_), (b, *_) in itertools.pairwise(tiles):
        assert 0 < b - a <= 0.75 * 1024, "neighbours share a quarter of a tile at least"
    grid = tile_regions((3000, 4000), 1024)
    assert len({t[0] for t in grid}) * len({t[1] for t in grid}) == len(grid)
    assert max(t[2] for t in grid) == 4000 and max(t[3] for t in grid) == 3000


def test_a_long_strip_is_searched_in_tiles():
    """Plates 60-72 px wide in a 4000 px strip shrink to 10-12 px letterboxed whole:
    only the tiles find them."""
    rng = np.random.default_rng(8)
    texts = [random_hk_plate(rng) for _ in range(3)]
    image, truths = render_scene(texts, size=(4000, 700), rng=rng, plate_frac=(0.015, 0.018))
    model = model_path("platedet-int8.onnx")
    whole = YoloPlateDetector(model, threads=2, input_size=640)
    tiled = YoloPlateDetector(model, threads=2, input_size=640, tile=1024)
    with whole, tiled:
        assert len(whole.detect(image)) < len(truths)
        _assert_finds(tiled.detect(image), truths)
        # A photo no more than 1.5 tiles long is searched whole only.
        small = image[:, :1500]
        assert tiled.detect(small).xyxy.tolist() == whole.detect(small).xyxy.tolist()


def test_a_box_near_a_regions_inner_side_is_taken_as_cut():
    rng = np.random.default_rng(41)
    image, truths = render_scene(
        [random_hk_plate(rng)], size=(1920, 1080), rng=rng, plate_frac=(0.07, 0.09)
    )
    (_, (x1, y1, x2, y2)) = truths[0]
    w = x2 - x1
    # The region's right side passes 10 px beyond the plate, inside the image.
    region = (int(x1 - w), int(y1 - w), int(x2 + 10), int(y2 + w))
    with YoloPlateDetector(model_path("platedet-int8.onnx"), threads=2, input_size=640) as det:
        assert len(det.detect_regions(image, [region], 640)) == 1
        assert len(det.detect_regions(image, [region], 640, edge_px=20)) == 0
