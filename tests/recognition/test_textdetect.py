from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.recognition.textdetect import (
    TEXT_SCORE_SCALE,
    TextPlateDetector,
    db_boxes,
    holding,
    input_shape,
    map_to_image,
    merge_proposals,
    plate_shaped,
    preprocess,
    uncovered,
    zoom_regions,
)
from edge.synth.scenes import render_scene
from edge.types import Detections
from tests.conftest import model_path

MODEL = "PP-OCRv6_det_small.onnx"


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _dets(rows) -> Detections:
    a = np.asarray(rows, np.float32).reshape(-1, 5)
    return Detections(np.ascontiguousarray(a[:, :4]), np.ascontiguousarray(a[:, 4]))


# --- pre-processing ---------------------------------------------------------------


def test_input_shape_scales_the_longer_side_and_aligns_to_32():
    assert input_shape((720, 1280), 640) == (352, 640)
    assert input_shape((1280, 720), 640) == (640, 352)
    assert input_shape((100, 200), 640) == (320, 640), "small images are enlarged"
    assert input_shape((10, 4000), 640) == (32, 640), "never below one stride"
    with pytest.raises(ValueError, match="multiple of 32"):
        input_shape((720, 1280), 650)


def test_preprocess_keeps_bgr_and_scales_to_plus_minus_one():
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0] = 255  # blue
    tensor = preprocess(image, (64, 128))
    assert tensor.shape == (1, 3, 64, 128) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0], 1.0)
    np.testing.assert_allclose(tensor[0, 1:], -1.0)


# --- post-processing --------------------------------------------------------------


def _hand_made_map() -> np.ndarray:
    prob = np.zeros((64, 160), np.float32)
    prob[20:30, 40:100] = 0.9  # text: 60 x 10 px
    prob[45:55, 20:60] = 0.4  # above the pixel threshold, below the box score
    prob[5:7, 150:152] = 0.9  # a speck
    return prob


def test_db_boxes_grows_the_region_by_the_unclip_distance():
    boxes, scores = db_boxes(_hand_made_map(), unclip_ratio=1.6)
    assert boxes.shape == (1, 4) and scores.shape == (1,)
    # The 2x2 dilation adds a pixel right and below: pixel centres 40..100 x 20..30,
    # a 60 x 10 rectangle around (70, 25), grown by area * ratio / perimeter a side.
    d = 60 * 10 * 1.6 / (2 * (60 + 10))
    np.testing.assert_allclose(
        boxes[0], [70 - 30 - d, 25 - 5 - d, 70 + 30 + d, 25 + 5 + d], atol=0.5
    )
    assert 0.7 < scores[0] <= 0.9


def test_db_boxes_without_unclip_hugs_the_region():
    boxes, _ = db_boxes(_hand_made_map(), unclip_ratio=0.0)
    np.testing.assert_allclose(boxes[0], [40, 20, 100, 30], atol=0.5)


def test_db_boxes_score_and_size_filters():
    boxes, scores = db_boxes(_hand_made_map(), box_threshold=0.3)
    assert len(boxes) == 2, "the faint region passes a lower box threshold; the speck never"
    assert sorted(np.round(scores, 1)) == [0.4, 0.8]
    assert len(db_boxes(_hand_made_map(), min_side=11)[0]) == 0
    empty_boxes, empty_scores = db_boxes(np.zeros((32, 32), np.float32))
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)
    with pytest.raises(ValueError):
        db_boxes(np.zeros((1, 32, 32), np.float32))


def test_db_boxes_bounds_a_rotated_region_and_clips_to_the_map():
    prob = np.zeros((100, 100), np.float32)
    cv2.fillPoly(prob, [np.array([[10, 40], [60, 10], [70, 25], [20, 55]], np.int32)], 0.9)
    prob[90:100, 0:50] = 0.9
    boxes, _ = db_boxes(prob)
    assert len(boxes) == 2
    rotated = boxes[np.argmin(boxes[:, 1])]
    assert rotated[0] < 10 and rotated[1] < 10 and rotated[2] > 70 and rotated[3] > 55
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 100 and boxes[:, [1, 3]].max() <= 100


def test_map_to_image_scales_each_axis_and_clips():
    boxes = np.array([[10, 10, 50, 20], [-5, 0, 200, 40]], np.float32)
    out = map_to_image(boxes, (32, 160), (72, 320))
    np.testing.assert_allclose(out[0], [20, 22.5, 100, 45])
    np.testing.assert_allclose(out[1], [0, 0, 320, 72])


def test_plate_shape_filter():
    boxes = np.array(
        [
            [0, 0, 100, 25],  # a one-row plate
            [0, 0, 60, 40],  # a two-row plate
            [0, 0, 400, 30],  # a line of signage
            [0, 0, 40, 8],  # too low to read
            [0, 0, 20, 60],  # upright text
        ],
        np.float32,
    )
    assert plate_shaped(boxes).tolist() == [True, True, False, False, False]
    assert plate_shaped(boxes, max_aspect=20).tolist() == [True, True, True, False, False]


# --- merging ----------------------------------------------------------------------


def test_merge_adds_only_text_boxes_away_from_plates_and_ranks_them_last():
    primary = _dets([[100, 100, 200, 140, 0.9], [400, 100, 500, 140, 0.4]])
    extra = _dets(
        [
            [700, 300, 780, 330, 0.95],  # alone: added
            [102, 98, 205, 142, 0.9],  # the first plate again: dropped
            [410, 110, 450, 130, 0.8],  # a line inside the second plate: dropped
            [10, 10, 60, 30, 0.6],  # alone: added
        ]
    )
    merged = merge_proposals(primary, extra, 0.3)
    np.testing.assert_array_equal(merged.xyxy[:2], primary.xyxy)
    np.testing.assert_array_equal(merged.scores[:2], primary.scores)
    np.testing.assert_array_equal(merged.xyxy[2:], extra.xyxy[[0, 3]])
    scale = TEXT_SCORE_SCALE * 0.4
    np.testing.assert_allclose(merged.scores[2:], [0.95 * scale, 0.6 * scale], rtol=1e-6)
    assert np.all(np.diff(merged.scores) <= 0) and merged.scores[2:].max() < 0.4

    kept_inside = merge_proposals(primary, extra, 0.3, within=1.01)
    assert len(kept_inside) == 5, "the line inside a plate counts only by IoU then"
    assert len(merge_proposals(primary, extra, 0.99)) == 4, "IoU below the limit is kept"


def test_merge_edge_cases():
    primary = _dets([[100, 100, 200, 140, 0.9]])
    extra = _dets([[10, 10, 60, 30, 0.6]])
    assert merge_proposals(primary, Detections.empty(), 0.3) is primary
    alone = merge_proposals(Detections.empty(), extra, 0.3)
    np.testing.assert_allclose(alone.scores, [0.6 * TEXT_SCORE_SCALE])
    np.testing.assert_array_equal(alone.xyxy, extra.xyxy)
    assert len(merge_proposals(Detections.empty(), Detections.empty(), 0.3)) == 0


def test_uncovered_marks_text_boxes_no_plate_box_holds():
    primary = _dets([[100, 100, 200, 140, 0.9]])
    extra = _dets(
        [
            [102, 98, 205, 142, 0.9],  # the plate again
            [110, 110, 150, 130, 0.8],  # a line inside it
            [700, 300, 780, 330, 0.7],  # elsewhere
        ]
    )
    assert uncovered(primary, extra, 0.3).tolist() == [False, False, True]
    assert uncovered(primary, extra, 0.3, within=1.01).tolist() == [False, True, True]
    assert uncovered(Detections.empty(), extra, 0.3).tolist() == [True, True, True]
    assert uncovered(primary, Detections.empty(), 0.3).tolist() == []


def test_zoom_regions_centre_on_the_text_and_reach_past_a_plate_row():
    # A wide row: the region is `context` times its width, 3:4 as high.
    wide, row = zoom_regions(np.array([[100, 100, 200, 120], [0, 0, 40, 40]]), 2.5)
    np.testing.assert_allclose(wide, [25, 16.25, 275, 203.75])
    # A squarish box (one row of a two-row plate): twice its height counts, so the
    # region reaches the other row whichever it is.
    np.testing.assert_allclose(row, [-80, -55, 120, 95])
    assert zoom_regions(np.zeros((0, 4)), 2.5).shape == (0, 4)


def test_holding_keeps_plate_boxes_around_the_text():
    text = np.array([[100, 100, 160, 130]], np.float32)
    found = _dets(
        [
            [90, 95, 180, 170, 0.8],  # the whole two-row plate around the row: kept
            [150, 100, 300, 130, 0.7],  # overlaps a sixth of the row: dropped
            [400, 400, 500, 440, 0.6],  # elsewhere: dropped
        ]
    )
    kept = holding(found, text)
    np.testing.assert_array_equal(kept.xyxy, found.xyxy[:1])
    np.testing.assert_array_equal(kept.scores, found.scores[:1])
    assert len(holding(Detections.empty(), text)) == 0
    assert len(holding(found, np.zeros((0, 4), np.float32))) == 0


def test_detections_select_like_arrays():
    found = _dets([[0, 0, 10, 10, 0.9], [5, 5, 20, 20, 0.5], [1, 1, 2, 2, 0.1]])
    np.testing.assert_array_equal(found[[2, 0]].scores, np.float32([0.1, 0.9]))
    np.testing.assert_array_equal(found[np.array([False, True, False])].xyxy, [[5, 5, 20, 20]])
    assert len(found[:0]) == 0 and len(found[1:]) == 2


# --- the model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    with TextPlateDetector(model_path(MODEL), threads=1) as det:
        yield det


def _black_plate_scene() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A grey road with a white-on-black plate; returns it and the characters' bounds."""
    rng = np.random.default_rng(5)
    image = rng.integers(90, 130, (720, 1280, 3), dtype=np.uint8)
    cv2.rectangle(image, (500, 400), (760, 460), (20, 20, 20), -1)
    cv2.putText(image, "ZA1234", (515, 448), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (245, 245, 245), 4)
    ys, xs = np.nonzero((image[400:460, 500:760] > 200).all(axis=2))
    return image, (500 + xs.min(), 400 + ys.min(), 500 + xs.max() + 1, 400 + ys.max() + 1)


def test_finds_white_on_black_text(detector):
    image, chars = _black_plate_scene()
    found = detector.detect(image)
    assert len(found) >= 1
    assert max(_iou(box, chars) for box in found.xyxy) > 0.5
    assert np.all(np.diff(found.scores) <= 0) and found.scores.min() >= 0.5


def test_finds_a_generated_hong_kong_plate(detector):
    image, truths = render_scene(["AB1234"], rng=np.random.default_rng(2))
    ((_, plate),) = truths
    found = detector.detect(image)
    assert max(_iou(box, plate) for box in found.xyxy) > 0.4


def test_plate_filter_drops_a_long_text_line():
    image = np.full((720, 1280, 3), 110, np.uint8)
    cv2.putText(
        image,
        "THIS IS A LONG LINE OF SIGN TEXT",
        (60, 300),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.4,
        (20, 20, 20),
        3,
    )
    with TextPlateDetector(model_path(MODEL), threads=1, plate_filter=False) as unfiltered:
        lines = unfiltered.detect(image)
    assert any((b[2] - b[0]) > 8 * (b[3] - b[1]) for b in lines.xyxy)
    with TextPlateDetector(model_path(MODEL), threads=1) as det:
        kept = det.detect(image)
    assert not any((b[2] - b[0]) > 8 * (b[3] - b[1]) for b in kept.xyxy)


def test_blank_image_gives_no_boxes(detector):
    assert len(detector.detect(np.full((480, 640, 3), 100, np.uint8))) == 0


def test_rejects_bad_input(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="multiple of 32"):
        TextPlateDetector(model_path(MODEL), longest=500)


def test_closed_detector_refuses_work():
    det = TextPlateDetector(model_path(MODEL), threads=1)
    det.close()
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(np.zeros((64, 64, 3), np.uint8))


def test_detector_times_its_stages(detector):
    before = detector.times.snapshot()
    detector.detect(np.full((480, 640, 3), 100, np.uint8))
    runs, pre, infer, post = (b - a for a, b in zip(before, detector.times.snapshot(), strict=True))
    assert runs == 1 and pre > 0 and infer > 0 and post >= 0
