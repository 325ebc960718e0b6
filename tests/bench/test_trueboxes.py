"""`bench video --mode true-boxes`: reading at the clips' true plate boxes, per width
and through the vote."""

from __future__ import annotations

import dataclasses

import pytest

from edge.bench.trueboxes import (
    BoxReading,
    PassReadings,
    decide,
    format_true_boxes,
    run_true_boxes,
    vote_json,
    width_rates,
)
from edge.config import TrackingConfig, load_config
from edge.recognition.plateformat import load_format
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec
from edge.types import PlateText
from tests.conftest import model_path

HK = load_format("hk")
FPS = 30.0


def reading(text: str, conf: float = 0.98) -> PlateText:
    return PlateText(text, conf, (conf,) * len(text), "")


def passing(text: str, readings: list[tuple[int, float, str | None]], kind="approach"):
    """A pass first legible at frame 100, read at (frame, width, text or None)."""
    return PassReadings(
        text,
        kind,
        100,
        tuple(BoxReading(f, w, None if t is None else reading(t)) for f, w, t in readings),
    )


def test_readings_are_rated_by_plate_width():
    p = passing(
        "AB123",
        [
            (100, 61.0, "AB123"),
            (101, 62.0, "AB128"),  # another plate: wrong
            (102, 64.9, None),  # fits no plate: neither
            (103, 66.0, "AB123"),
            (104, 130.0, "AB123"),
            (105, 59.0, "AB123"),  # under the narrowest band: not counted
        ],
    )
    bands = {b["px"]: b for b in width_rates([p])}
    assert bands["60-64"]["readings"] == 3
    assert (bands["60-64"]["exact_rate"], bands["60-64"]["wrong_rate"]) == (0.333, 0.333)
    assert bands["65-69"]["readings"] == 1 and bands["65-69"]["exact_rate"] == 1.0
    assert bands["120+"]["readings"] == 1
    assert bands["80-89"] == {"px": "80-89", "readings": 0, "exact_rate": None, "wrong_rate": None}


def test_the_vote_decides_at_the_frame_whose_reading_settles_it():
    tracking = TrackingConfig()  # decide_margin 1.9, min_reads 2
    # Unread frames first, then two sure readings: decided at the second, 4 frames in.
    p = passing("AB123", [(100, 61, None), (101, 62, None), (103, 64, "AB123"), (104, 65, "AB123")])
    assert decide(p, tracking, HK, FPS) == (pytest.approx(4 * 1000 / FPS), "AB123")
    # A disagreeing reading delays it until the right text outweighs it by the margin.
    p = passing("AB123", [(100, 61, "AB128"), (101, 62, "AB123"), (102, 63, "AB123")])
    assert decide(p, tracking, HK, FPS) is None
    p = dataclasses.replace(p, readings=(*p.readings, BoxReading(103, 64, reading("AB123"))))
    assert decide(p, tracking, HK, FPS) == (pytest.approx(100.0), "AB123")
    # min_reads holds even for readings sure enough at once.
    three = dataclasses.replace(tracking, min_reads=3)
    p = passing("AB123", [(100, 61, "AB123"), (101, 62, "AB123"), (102, 63, "AB123")])
    assert decide(p, three, HK, FPS)[0] == pytest.approx(2 * 1000 / FPS)

    sure = passing("CD45", [(100, 70, "CD45"), (101, 70, "CD45")], kind="cross")
    wrong = passing("EF67", [(100, 70, "EF61"), (101, 70, "EF61")])
    never = passing("GH89", [(100, 70, None)])
    summary = vote_json([(q, decide(q, tracking, HK, FPS)) for q in (sure, wrong, never)])
    assert (summary["passes"], summary["decided_right"]) == (3, 1)
    assert (summary["decided_wrong"], summary["undecided"]) == (1, 1)
    assert summary["legible_to_decision_ms"]["by_kind"]["cross"]["p50"] == pytest.approx(33.3)
    text = "\n".join(format_true_boxes({"window_seconds": 2.0, "by_width": [], "vote": summary}))
    assert "decided right 1, wrong 1, undecided 1" in text


def test_true_boxes_bench_reads_a_generated_clip(tmp_path):
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")
    spec = ClipSpec(size=(1280, 720), fps=15, plates=("KT4821", "PX507", "AB88"), seed=5)
    path = tmp_path / "clip.mp4"
    truth = render_clip(path, spec)
    result = run_true_boxes(load_config(None), [(path, truth)])
    legible = [p for p in truth.passes if p.first_legible_frame is not None]
    vote = result["vote"]
    assert vote["passes"] == len(legible) == 3
    # Every pass is decided within its window; most rightly (a plate read one short at
    # 60-65 px, KT482, can settle the vote before the full plate is legible enough).
    assert vote["undecided"] == 0 and vote["decided_right"] >= 2
    # One reading per legible frame in the window, each in its width band.
    window = round(result["window_seconds"] * truth.fps)
    frames = sum(len(p.legible_frames()[:window]) for p in legible)
    assert sum(b["readings"] for b in result["by_width"]) == frames
    assert "true boxes (perfect detection)" in "\n".join(format_true_boxes(result))
