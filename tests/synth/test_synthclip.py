"""Generated dashcam clips: truth, pixels, the written video, and that the real
recogniser reads the passing plates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import load_config
from edge.recognition.detect import box_iou
from edge.recognition.recognize import open_recognizer
from edge.synth.clipplan import plan_clip
from edge.synth.clips import ClipRenderer, main, render_clip
from edge.synth.clipspec import PLATE_STYLES, ClipSpec, ClipTruth
from tests.conftest import model_path

STANDARD_MARK = re.compile(r"^[A-HJ-NPR-Z]{2}[1-9][0-9]{0,3}$")
PERSONALISED_MARK = re.compile(r"^[A-HJ-NPR-Z0-9]{2,8}$")
CROSSBOUNDARY_MARK = re.compile(r"^粤(Z[A-HJ-NP-Z0-9]{4})[港澳]$")
# Long enough for every kind of pass, every style of plate and a few overlaps;
# planning draws nothing.
LONG = ClipSpec(seconds=90, seed=11, overlap=0.4)
# The end-to-end clip: two passes, marks spelled out so the test reads as its intent.
E2E = ClipSpec(size=(1280, 720), plates=("KT4821", "PX507"), seed=3, kinds=("approach", "cross"))
# A cross-boundary vehicle: the Hong Kong plate and the black Guangdong plate under it.
CROSS = ClipSpec(
    size=(1280, 720), plates=("HN2468",), seed=4, kinds=("follow",), style="crossboundary"
)


def _decode(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps, size


@pytest.fixture(scope="module")
def long_truth() -> ClipTruth:
    return plan_clip(LONG)


@pytest.fixture(scope="module")
def e2e_clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("clip") / "e2e.mp4"
    return path, render_clip(path, E2E)


def test_same_spec_same_truth_and_pixels():
    spec = ClipSpec(size=(640, 360), passes=2, seed=7)
    truth = plan_clip(spec)
    assert plan_clip(spec) == truth
    assert plan_clip(ClipSpec(size=(640, 360), passes=2, seed=8)) != truth
    a, b = ClipRenderer(spec), ClipRenderer(spec)
    assert a.truth == truth
    busy = [(p.first_frame + p.last_frame) // 2 for p in truth.passes]
    for i in [0, *busy, len(a) - 1]:
        assert np.array_equal(a.frame(i), b.frame(i)), i
    # Frames are pure functions of their index, not of what was drawn before.
    assert np.array_equal(a.frame(busy[0]), ClipRenderer(spec).frame(busy[0]))


def test_video_decodes_with_the_truths_count_rate_and_size(e2e_clip):
    path, truth = e2e_clip
    frames, fps, size = _decode(path)
    assert len(frames) == truth.frame_count > 0
    assert fps == pytest.approx(30.0)
    assert size == (1280, 720) == truth.size
    assert frames[0].shape == (720, 1280, 3)
    assert ClipTruth.load(path) == truth
    assert ClipTruth.load(path.with_suffix(".json")) == truth


def test_lossless_codec_keeps_the_rendered_pixels(tmp_path):
    spec = ClipSpec(size=(320, 180), passes=1, seed=4, codec="FFV1", legible_px=30)
    truth = render_clip(tmp_path / "clip.mkv", spec)
    frames, _, _ = _decode(tmp_path / "clip.mkv")
    renderer = ClipRenderer(spec)
    assert len(frames) == truth.frame_count == len(renderer)
    for i in range(0, len(frames), 7):
        assert np.array_equal(frames[i], renderer.frame(i)), i


def test_truth_json_schema(e2e_clip):
    path, truth = e2e_clip
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["version"] == 1
    assert data["size"] == [1280, 720] and data["fps"] == 30.0
    assert data["frame_count"] == truth.frame_count and data["legible_px"] == 60.0
    assert data["spec"]["plates"] == ["KT4821", "PX507"]
    assert [p["text"] for p in data["passes"]] == ["KT4821", "PX507"]
    assert data["fine_to_read"] == []
    for p in data["passes"]:
        # Given marks come without cross-boundary plates unless the style asks for them.
        assert p["style"] in ("front", "rear", "two-row") and p["crossboundary"] is None
        assert p["kind"] in ("approach", "cross")
        assert len(p["boxes"]) == p["last_frame"] - p["first_frame"] + 1
        assert p["first_frame"] <= p["first_legible_frame"] <= p["last_legible_frame"]
        assert p["last_legible_frame"] <= p["last_frame"]
        assert all(len(b) == 4 for b in p["boxes"])


def test_marks_are_unique_and_valid(long_truth):
    texts = [p.text for p in long_truth.passes]
    assert len(texts) >= 20
    assert all(PERSONALISED_MARK.match(t) for t in texts)
    standard = [t for t in texts if STANDARD_MARK.match(t)]
    assert 0.7 * len(texts) <= len(standard) < len(texts), "now and then a personalised mark"
    assert {p.style for p in long_truth.passes} == set(PLATE_STYLES)
    assert {p.kind for p in long_truth.passes} == {"approach", "overtake", "follow", "cross"}
    # A cross-boundary plate's core is what the recogniser reports; it is fine to read.
    cores = []
    for p in long_truth.passes:
        assert (p.style == "crossboundary") == (p.crossboundary is not None)
        if p.crossboundary:
            cores.append(CROSSBOUNDARY_MARK.match(p.crossboundary)[1])
    assert list(long_truth.fine_to_read) == cores
    assert len(set(texts + cores)) == len(texts) + len(cores)


def test_boxes_lie_in_the_frame_and_move_smoothly(long_truth):
    w, h = long_truth.size
    for p in long_truth.passes:
        boxes = np.array(p.boxes)
        assert len(boxes) == p.last_frame - p.first_frame + 1
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        whole = (boxes[:, 0] > 0) & (boxes[:, 2] < w) & (boxes[:, 3] < h)
        widths = boxes[:, 2] - boxes[:, 0]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        both = whole[1:] & whole[:-1]
        # Frame to frame, a plate in full view moves a few dozen pixels at most and
        # changes its width by a few percent: smooth enough to track.
        step = np.linalg.norm(np.diff(centres, axis=0), axis=1)[both]
        growth = (widths[1:] / widths[:-1])[both]
        assert (step < 0.06 * w).all(), (p.text, p.kind, step.max())
        assert (abs(growth - 1) < 0.1).all(), (p.text, p.kind, growth.min(), growth.max())
        if p.kind == "approach":
            assert widths[whole].argmax() > 0.5 * whole.sum(), "approaching plates grow"
        if p.kind == "cross":
            assert widths[whole].max() < 1.4 * widths[whole].min(), "crossing keeps its size"
            assert np.ptp(centres[:, 0]) > 0.7 * w, "crossing slides across"


def test_every_pass_has_a_legible_window(long_truth):
    fps = long_truth.fps
    for p in long_truth.passes:
        legible = p.legible_frames()
        assert legible, p
        seconds = len(legible) / fps
        # A car ahead that we close in on and fall back from is legible both ways.
        longest = 3.0 if p.kind == "follow" else 1.6
        assert 0.5 <= seconds <= longest, (p.text, p.kind, seconds)
        for f in legible:
            x1, _, x2, _ = p.box_at(f)
            assert x2 - x1 >= long_truth.legible_px
        assert 80 <= p.peak_width <= 0.16 * long_truth.size[0] + 20


def test_passes_are_mostly_sequential_with_gaps_and_never_overlap_in_space(long_truth):
    visible = np.zeros(long_truth.frame_count, int)
    for p in long_truth.passes:
        visible[p.first_frame : p.last_frame + 1] += 1
    assert (visible == 2).any(), "some passes share the view"
    assert (visible == 2).mean() < 0.1
    # Runs of empty road between plates: a tracker must end one track and start another.
    # Only the passes drawn to overlap (a share LONG.overlap) may go without one.
    starts = np.nonzero((visible[1:] == 0) & (visible[:-1] > 0))[0]
    assert len(starts) >= (1 - LONG.overlap) * len(long_truth.passes)
    for f in np.nonzero(visible == 2)[0]:
        (_, a), (_, b) = long_truth.visible_at(int(f))
        assert box_iou(np.array(a), np.array([b]))[0] == 0


@pytest.mark.parametrize("style", ["rear", "two-row", "crossboundary"])
def test_plate_is_drawn_where_the_truth_says(style):
    spec = ClipSpec(passes=3, seed=21, blur=0, noise=0, style=style, kinds=("follow",), wear=0)
    renderer = ClipRenderer(spec)
    for p in renderer.truth.passes:
        assert p.style == style
        legible = p.legible_frames()
        f = legible[len(legible) // 2]
        x1, y1, x2, y2 = (round(v) for v in p.box_at(f))
        frame = renderer.frame(f)
        # Through the characters: the middle of a one-row plate, a row of a two-row one.
        cy, pad = (y1 + 3 * y2) // 4 if style == "two-row" else (y1 + y2) // 2, (x2 - x1) // 12
        row = frame[cy - 1 : cy + 2, x1 + pad : x2 - pad].reshape(-1, 3)
        if style != "crossboundary":  # a cross-boundary car's plate may be white
            yellow = (row[:, 2] > 180) & (row[:, 1] > 140) & (row[:, 0] < 90)
            assert 0.3 < yellow.mean() < 0.95, p.text
        assert (row.max(axis=1) < 80).mean() > 0.03, "ink"
        if style == "crossboundary":
            # Directly under it, the black plate with white characters (its middle is
            # about 0.7 of the Hong Kong plate's height below that plate).
            below = y2 + (y2 - y1) * 7 // 10
            row = frame[below - 1 : below + 2, x1 + pad : x2 - pad].reshape(-1, 3)
            assert (row.max(axis=1) < 60).mean() > 0.3, "black plate"
            assert (row.min(axis=1) > 170).mean() > 0.1, "white characters"


def test_counts_and_lengths():
    assert len(plan_clip(ClipSpec(passes=3, seed=1)).passes) == 3
    fixed = plan_clip(ClipSpec(seconds=12, seed=1))
    assert fixed.frame_count == 360 and len(fixed.passes) >= 3
    assert all(p.last_frame < 360 for p in fixed.passes)
    with pytest.raises(ValueError, match="do not fit"):
        plan_clip(ClipSpec(seconds=2, passes=5))
    for bad in (
        {"size": (100, 50)},
        {"plates": ("AB1", "AB1")},
        {"plates": ("LOVE",)},  # HK marks never show I, O or Q
        {"plates": ("ABCDEFGH1",)},
        {"style": "hershey"},
        {"personalised": 1.5},
        {"codec": "h265"},
        {"kinds": ("reverse",)},
        {"exposure_s": 0.1},
        {"passes": 2, "plates": ("AB1",)},
    ):
        with pytest.raises(ValueError):
            ClipSpec(**bad)


def test_command_line_writes_clip_and_summary(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main([str(out), "--seconds", "3", "--size", "640x360", "--seed", "2"]) == 0
    truth = ClipTruth.load(out)
    assert truth.frame_count == 90 and truth.size == (640, 360)
    text = capsys.readouterr().out
    assert "ms/frame" in text and all(p.text in text for p in truth.passes)
    assert main([str(tmp_path / "x.mp4"), "--seconds", "1", "--passes", "4"]) == 2


def test_recogniser_reads_every_pass(e2e_clip):
    model_path("platedet.onnx")
    path, truth = e2e_clip
    frames, _, _ = _decode(path)
    config = load_config(None, environ={})
    with open_recognizer(config) as recognizer:
        for p in truth.passes:
            checked = detected = exact = 0
            for f in p.legible_frames()[::3]:
                result = recognizer.recognize(frames[f])
                box = np.array(p.box_at(f))
                checked += 1
                if len(result.detections) and box_iou(box, result.detections.xyxy).max() > 0.4:
                    detected += 1
                exact += any(
                    r.text == p.text and box_iou(box, np.array([r.box]))[0] > 0.4
                    for r in result.plates
                )
            assert checked >= 5
            assert detected >= 0.8 * checked, (p.text, detected, checked)
            assert exact >= 3, (p.text, exact, checked)


@pytest.mark.xfail(
    strict=True,
    reason="the plate detector boxes a plate and the cross-boundary plate under it as one "
    "(read as HN2468ZW, HN246, ...) until a plate is about 150 px wide; see "
    "tests/recognition/test_crossboundary.py, which reads them at their true boxes",
)
def test_recogniser_reads_a_cross_boundary_vehicles_two_plates(tmp_path):
    model_path("platedet.onnx")
    truth = render_clip(tmp_path / "cross.mp4", CROSS)
    frames, _, _ = _decode(tmp_path / "cross.mp4")
    (p,) = truth.passes
    core = CROSSBOUNDARY_MARK.match(p.crossboundary)[1]
    assert p.style == "crossboundary" and truth.fine_to_read == (core,)
    config = load_config(None, environ={})
    hk_reads = core_reads = checked = 0
    with open_recognizer(config) as recognizer:
        for f in p.legible_frames()[::4]:
            texts = {r.text for r in recognizer.recognize(frames[f]).plates}
            checked += 1
            hk_reads += p.text in texts
            core_reads += core in texts
    assert checked >= 5
    assert hk_reads >= 0.5 * checked, (hk_reads, checked)
    assert core_reads >= 3, (core_reads, checked)
