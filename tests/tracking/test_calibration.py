"""Calibrated read confidence: the evidence score, the isotonic fit, the table, and the
tracker withholding reads that are not sure enough."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from edge.tracking.calibration import ConfidenceCalibration, evidence_score, fit_isotonic
from edge.tracking.pipeline import load_calibration
from edge.tracking.track import PlateTracker
from edge.types import TextCandidate
from tests.tracking.test_corrections import HK, approaching_box, drive
from tests.tracking.test_track import config


def test_a_rival_text_read_in_half_the_frames_halves_the_evidence():
    alone = [TextCandidate("AB1234", 0.98)]
    rivalled = [TextCandidate("AB1234", 0.98), TextCandidate("748", 0.5)]
    assert evidence_score("AB1234", 0.98, alone) == pytest.approx(0.98)
    assert evidence_score("AB1234", 0.98, rivalled) == pytest.approx(0.49)


def test_the_isotonic_fit_gives_the_share_right_and_never_falls():
    rng = random.Random(3)
    # Reads whose chance of being right is their score squared.
    samples = [(s, rng.random() < s * s) for s in (rng.random() for _ in range(4000))]
    points = fit_isotonic(samples, min_reads=50)
    xs, ys = zip(*points, strict=True)
    assert list(xs) == sorted(xs) and list(ys) == sorted(ys)
    table = ConfidenceCalibration(points)
    for score in (0.3, 0.5, 0.7, 0.9):
        assert table(score) == pytest.approx(score * score, abs=0.06)
    # Every block holds enough reads to say something.
    assert len(points) <= 4000 // 50 + 2


def test_a_small_set_is_one_honest_block():
    samples = [(0.99, True)] * 9 + [(0.99, False)]
    table = ConfidenceCalibration(fit_isotonic(samples, min_reads=25))
    assert table(0.99) == pytest.approx(0.9)


def test_a_table_must_rise_and_stay_in_range(tmp_path: Path):
    with pytest.raises(ValueError, match="increase"):
        ConfidenceCalibration(((0.0, 0.5), (1.0, 0.4)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ConfidenceCalibration(((0.0, 0.0), (1.0, 1.5)))
    table = ConfidenceCalibration(((0.0, 0.0), (0.8, 0.5), (1.0, 0.9)), "test")
    again = ConfidenceCalibration.from_json(table.to_json())
    assert again == table and again(0.9) == pytest.approx(0.7)


def test_the_shipped_table_loads_and_a_bad_one_names_the_key(tmp_path: Path):
    shipped = ConfidenceCalibration.load()
    assert shipped(0.0) <= shipped(0.5) <= shipped(1.0) <= 1.0
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    (tmp_path / "edge.toml").write_text('[tracking]\nconfidence_calibration = "bad.json"\n')
    with pytest.raises(ConfigError, match="'tracking.confidence_calibration' bad.json"):
        load_calibration(load_config(tmp_path / "edge.toml", environ={}))
    (tmp_path / "good.json").write_text(ConfidenceCalibration.identity().to_json())
    (tmp_path / "edge.toml").write_text('[tracking]\nconfidence_calibration = "good.json"\n')
    assert load_calibration(load_config(tmp_path / "edge.toml", environ={}))(0.4) == 0.4


# A table under which a read of evidence 0.85 or more is right over 92% of the time and
# one below 0.8 under 40%.
STRICT = ConfidenceCalibration(((0.0, 0.0), (0.8, 0.4), (0.85, 0.92), (1.0, 0.99)))


def tracker(min_read_confidence: float) -> PlateTracker:
    cfg = dataclasses.replace(config(decide_margin=1.9), min_read_confidence=min_read_confidence)
    return PlateTracker("front", "cam", cfg, HK, calibration=STRICT)


def test_reads_go_out_with_their_calibrated_confidence():
    (read,) = drive(tracker(0.0), ["AB1234"] * 10)
    # drive() reads every frame at 0.95: evidence 0.95, calibrated 0.967.
    assert read.confidence == pytest.approx(0.92 + 0.07 * 0.1 / 0.15, abs=1e-3)


def test_a_read_short_of_min_read_confidence_waits_and_is_withheld_if_it_stays_unsure():
    # Two texts fight to the end: the winner's evidence is low, and nothing goes out.
    texts = ["AB1234", "AB1284"] * 6 + ["AB1234"]
    unsure = tracker(0.9)
    assert drive(unsure, texts) == []
    assert unsure.withheld == 1
    # Without the threshold the same track is read (and may well be wrong).
    assert [r.plate for r in drive(tracker(0.0), texts)] == ["AB1234"]


def test_an_unsure_read_goes_out_once_later_views_settle_it():
    texts = ["AB1234", "AB1284"] * 3 + ["AB1234"] * 30
    (read,) = drive(tracker(0.9), texts, box=approaching_box)
    assert read.plate == "AB1234" and read.confidence >= 0.9
