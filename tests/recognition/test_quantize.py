from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge.recognition.detect import YoloPlateDetector, box_iou
from edge.recognition.quantize import kth_smallest, make_int8_detector, snap_range
from edge.synth.scenes import random_hk_plate, render_scene
from tests.conftest import model_path

# Seeds apart from the calibration scenes' (edge.recognition.quantize.CALIBRATION_SEED).
SCENES = (
    # (seed, frame (width, height), number of plates, plate width / frame width)
    (101, (1280, 720), 2, (0.08, 0.20)),
    (102, (1920, 1080), 3, (0.04, 0.08)),
    (103, (640, 480), 1, (0.15, 0.30)),
)


def _scene(seed, size, n_plates, plate_frac):
    rng = np.random.default_rng(seed)
    texts = [random_hk_plate(rng) for _ in range(n_plates)]
    return render_scene(texts, size=size, rng=rng, plate_frac=plate_frac)


def test_snapped_ranges_hold_the_range_and_zero_and_absorb_wobble():
    for low, high in [(-0.2785, 6.39), (0.0017, 0.9999), (-25.23, -3.5), (0.0, 1.0)]:
        s_low, s_high = snap_range(low, high)
        assert s_low <= min(low, 0.0) and s_high >= max(high, 0.0)
        # At most one grid step (1/8 of the value) wider, at each end.
        assert s_high <= max(high, 0.0) * 1.125 and s_low >= min(low, 0.0) * 1.125
        for v in (s_low, s_high):
            assert float(np.float32(v)) == v, "grid values are exact in float32"
        assert snap_range(s_low, s_high) == (s_low, s_high)
        wobble = 1 + 1e-6
        assert snap_range(low * wobble, high / wobble) == (s_low, s_high)
    assert snap_range(0.3, 0.49) == (0.0, 0.5)
    assert snap_range(-math.ldexp(1, -20), 1.0) == (-math.ldexp(1, -20), 1.0)


def test_kth_smallest_is_exact():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200_000).astype(np.float32)
    for k in (0, 1, 2, 63, 64, 1999):
        assert kth_smallest(values, k) == np.partition(values, k)[k]
        assert -kth_smallest(-values, k) == np.partition(values, values.size - 1 - k)[-1 - k]


# --- with the real model ----------------------------------------------------------


@pytest.fixture(scope="module")
def int8_model() -> Path:
    # Built and verified against the manifest's SHA-256 by `models fetch`.
    return model_path("platedet-int8.onnx")


def test_int8_model_is_reproducible(int8_model, tmp_path):
    # The manifest pins the converter's output by hash: same input, same bytes, in a
    # fresh build here as in the one `models fetch` made.
    again = make_int8_detector(model_path("platedet-dynamic.onnx"), tmp_path / "again.onnx")
    assert again.read_bytes() == int8_model.read_bytes()


@pytest.fixture(scope="module")
def detectors(int8_model):
    fp16 = YoloPlateDetector(model_path("platedet-dynamic.onnx"), threads=2, input_size=640)
    int8 = YoloPlateDetector(int8_model, threads=2, input_size=640)
    with fp16, int8:
        yield fp16, int8


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"seed{s[0]}")
def test_int8_model_finds_plates_where_the_float_model_does(detectors, scene):
    fp16, int8 = detectors
    image, truths = _scene(*scene)
    ours, reference = int8.detect(image), fp16.detect(image)
    for text, box in truths:
        best = box_iou(np.array(box, np.float32), ours.xyxy).max(initial=0)
        assert best > 0.5, f"{text} at {box}: best IoU {best:.2f}"
    assert len(ours) == len(reference)
    for box, score in zip(reference.xyxy, reference.scores, strict=True):
        overlaps = box_iou(box, ours.xyxy)
        match = int(overlaps.argmax())
        assert overlaps[match] > 0.85
        # Compared as logits: quantisation shifts scores by about 0.1 on average.
        logit = np.log(score / (1 - score))
        other = ours.scores[match]
        assert abs(np.log(other / (1 - other)) - logit) < 1.0
