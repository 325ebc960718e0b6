"""Read corrections: a read that later, larger views of the same plate overturn is
re-issued as a correction naming it, and a hit raised on the wrong text is withdrawn."""

from __future__ import annotations

from edge.plateformat import load_format
from edge.track import PlateTracker
from tests.test_track import config, dets, frame, reading

HK = load_format("hk")


def approaching_box(n: int, x0: float = 100, y: float = 400) -> list[float]:
    """A plate coming closer: 4% wider every frame, from 70 px."""
    width = 70 * 1.04**n
    return [x0, y, x0 + width, y + width * 0.225]


def drive(tracker: PlateTracker, texts: list[str], box=approaching_box) -> list:
    """Feed one track ``texts[n]`` in frame ``n`` (read whenever the tracker asks),
    then end it; every read it gave, in order."""
    reads = []
    for n, text in enumerate(texts):
        f = frame(n)
        detections = dets(box(n))
        (track,) = tracker.associate(f, detections)
        if tracker.wants_reading(track, f.timestamp):
            tracker.add_reading(track, f, detections.xyxy[0], reading(text, 0.95), 0.8)
        reads += tracker.collect(f.timestamp, after_frame=True)
    return reads + tracker.collect(final=True)


def tracker() -> PlateTracker:
    return PlateTracker("front", "cam", config(decide_margin=1.9), HK)


# --- the tracker ---------------------------------------------------------------------


def test_an_early_misread_is_corrected_by_the_larger_views_that_follow():
    # Small and early, the plate reads AB1238 (4 as 8); larger, it reads AB1234.
    tr = tracker()
    reads = drive(tr, ["AB1238"] * 6 + ["AB1234"] * 24)
    assert [r.plate for r in reads] == ["AB1238", "AB1234"]
    first, correction = reads
    assert first.corrects_event_id is None
    assert correction.corrects_event_id == first.event_id
    assert correction.event_id != first.event_id
    # The same pass: it began when the plate was first seen, and its evidence is a
    # view that reads the corrected text (a larger one than the read's).
    assert correction.first_seen == first.first_seen and correction.camera == "front"
    assert correction.last_frame > first.last_frame
    assert correction.crop is not None and correction.crop.shape[1] > first.crop.shape[1]
    assert correction.readings > first.readings
    assert correction.candidates[0].text == "AB1234"
    # The corrected text is this pass: the same car picked up again within the dedup
    # window (a new track) is not a new read, whichever way it reads.
    assert drive(tr, ["AB1234"] * 10) == []
    assert tr.duplicates == 1


def test_a_single_contrary_reading_does_not_correct_the_read():
    texts = ["AB1234"] * 12 + ["AB1238"] + ["AB1234"] * 17
    assert [r.plate for r in drive(tracker(), texts)] == ["AB1234"]
    # Nor do two contrary readings in a row against the read's evidence.
    texts = ["AB1234"] * 12 + ["AB1238"] * 2 + ["AB1234"] * 16
    assert [r.plate for r in drive(tracker(), texts)] == ["AB1234"]


def test_another_plate_two_characters_away_is_still_a_new_pass_not_a_correction():
    reads = drive(tracker(), ["AB1234"] * 8 + ["XY1234"] * 22)
    assert [r.plate for r in reads] == ["AB1234", "XY1234"]
    assert [r.corrects_event_id for r in reads] == [None, None]


def test_a_corrected_read_never_flips_back():
    # The evidence turns to AB1234, then back to AB1238: one correction, never undone.
    texts = ["AB1238"] * 6 + ["AB1234"] * 14 + ["AB1238"] * 30
    reads = drive(tracker(), texts)
    assert [r.plate for r in reads] == ["AB1238", "AB1234"]


def test_a_read_that_was_a_duplicate_gives_its_corrected_text_as_a_plain_read():
    # The first pass reads AB1238 right; a second car in the window is first misread
    # as AB1238 (a duplicate: nothing goes out), then read as AB1234: a read of its own.
    tr = tracker()
    assert [r.plate for r in drive(tr, ["AB1238"] * 10)] == ["AB1238"]
    reads = drive(tr, ["AB1238"] * 6 + ["AB1234"] * 24)
    assert [(r.plate, r.corrects_event_id) for r in reads] == [("AB1234", None)]
