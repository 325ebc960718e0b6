from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.config import TrackingConfig
from edge.recognition.plateformat import load_format, make_format
from edge.tracking.track import PassLinker, PlateTracker
from edge.tracking.vote import vote
from edge.types import Detections, Frame, PlateText

HK = load_format("hk")
START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
FPS = 10.0


def reading(text: str, conf: float = 0.9, chars: list[float] | None = None) -> PlateText:
    probs = tuple(chars) if chars else (conf,) * len(text)
    return PlateText(text, min(probs), probs, "@@####")


def frame(n: int, camera: str = "front", size=(720, 1280)) -> Frame:
    t = n / FPS
    return Frame(
        camera=camera,
        image=np.zeros((*size, 3), np.uint8),
        seq=n,
        timestamp=t,
        captured_mono=1000.0 + t,
        captured_utc=START + timedelta(seconds=t),
        frame_number=n,
        media_ms=t * 1e3,
    )


def dets(*boxes) -> Detections:
    if not boxes:
        return Detections.empty()
    return Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.8, np.float32))


def step(tracker: PlateTracker, n: int, boxes: list, texts: list) -> list:
    f = frame(n)
    detections = dets(*boxes)
    tracks = tracker.associate(f, detections)
    for i, (track, text) in enumerate(zip(tracks, texts, strict=True)):
        if tracker.wants_reading(track, f.timestamp):
            tracker.add_reading(track, f, detections.xyxy[i], text, 0.8)
    return tracker.collect(f.timestamp, after_frame=True)


# --- vote --------------------------------------------------------------------------


def test_vote_takes_each_position_from_the_most_confident_readings():
    readings = [
        reading("AB1234", chars=[0.9, 0.9, 0.9, 0.9, 0.9, 0.9]),
        reading("A81234", chars=[0.9, 0.55, 0.9, 0.9, 0.9, 0.9]),
        reading("AB1284", chars=[0.9, 0.9, 0.9, 0.9, 0.5, 0.9]),
    ]
    result = vote(readings, HK)
    assert result.text == "AB1234"
    assert result.agreeing == 1
    assert 0.7 < result.confidence < 0.95
    assert result.candidates[0].text == "AB1234"
    assert {c.text for c in result.candidates} >= {"A81234", "AB1284"}


def test_vote_picks_the_length_with_most_weight_then_checks_the_format():
    readings = [reading("AB123"), reading("AB123"), reading("AB1234", 0.6)]
    assert vote(readings, HK).text == "AB123"
    # Same length, two patterns (@@## and ##@@): per position, "AB12" and "12AB"
    # mix into "A21B", which fits neither; the heaviest whole reading wins.
    fmt = make_format("two", [("std", 1.0, ["@@##", "##@@"])])
    mixed = [reading("AB12", chars=[0.9, 0.55, 0.9, 0.55]), reading("12AB", chars=[0.5, 0.9] * 2)]
    assert vote(mixed, None).text == "A21B", "without a format: the raw mix"
    result = vote(mixed, fmt)
    assert result.text == "AB12" and result.agreeing == 1


def test_vote_of_nothing_is_none():
    assert vote([], HK) is None


# --- tracking ----------------------------------------------------------------------


def config(**overrides) -> TrackingConfig:
    base = dict(
        iou_threshold=0.15,
        track_timeout_seconds=0.35,
        max_track_seconds=10.0,
        min_reads=2,
        dedup_seconds=30.0,
        decide_margin=0,
    )
    base.update(overrides)
    return TrackingConfig(**base)


def moving_box(n: int, x0: float = 100, dx: float = 12, y: float = 400) -> list[float]:
    x = x0 + dx * n
    return [x, y, x + 200, y + 45]


def test_one_pass_gives_one_read_with_its_span_and_evidence():
    tracker = PlateTracker("front", "clip.mp4", config(), HK)
    reads = []
    texts = ["AB1234", "AB1234", "A81234", "AB1234", "AB1284", "AB1234"]
    for n, text in enumerate(texts):
        reads += step(tracker, n, [moving_box(n)], [reading(text)])
    assert reads == []  # waits for the end of the track
    for n in range(6, 12):
        reads += step(tracker, n, [], [])
    assert len(reads) == 1
    read = reads[0]
    assert read.plate == "AB1234" and read.camera == "front" and read.source == "clip.mp4"
    assert (read.frames, read.readings) == (6, 6)
    assert (read.first_frame, read.last_frame) == (0, 5)
    assert read.first_seen == START and read.last_seen == START + timedelta(seconds=0.5)
    assert read.crop is not None and read.crop.shape[0] > 45
    assert tracker.live_tracks == 0


def test_an_agreed_track_reads_early_and_is_then_only_rechecked():
    tracker = PlateTracker("front", "cam", config(decide_margin=2.0), HK)
    reads = []
    ocr_calls = 0
    for n in range(10):
        f = frame(n)
        detections = dets(moving_box(n))
        (track,) = tracker.associate(f, detections)
        if tracker.wants_reading(track, f.timestamp):
            ocr_calls += 1
            tracker.add_reading(track, f, detections.xyxy[0], reading("XY88"), 0.8)
        reads += tracker.collect(f.timestamp)
        if n == 2:
            assert [r.plate for r in reads] == ["XY88"], "read as soon as 3 agree"
    # Three to decide, then a recheck every 0.3 s (every 3rd frame).
    assert ocr_calls == 3 + 2, "only rechecks once the read is out"
    reads += tracker.collect(final=True)
    assert [r.plate for r in reads] == ["XY88"]


def test_another_plate_in_a_read_track_is_a_pass_of_its_own():
    # A car changes lanes and reveals the one ahead in the same place: the detections
    # go on as one track, only the readings change.
    tracker = PlateTracker("front", "cam", config(decide_margin=1.9), HK)
    reads = []
    read_frames = []
    for n in range(30):
        f = frame(n)
        detections = dets(moving_box(n, dx=2))
        (track,) = tracker.associate(f, detections)
        text = "AB1234" if n < 10 else "XY88"
        if tracker.wants_reading(track, f.timestamp):
            read_frames.append(n)
            tracker.add_reading(track, f, detections.xyxy[0], reading(text, 0.95), 0.8)
        reads += tracker.collect(f.timestamp, after_frame=True)
    reads += tracker.collect(final=True)
    assert [r.plate for r in reads] == ["AB1234", "XY88"]
    new = reads[1]
    first_new = min(n for n in read_frames if n >= 10)
    assert new.first_frame == first_new, "the new pass starts at its plate's first reading"
    assert new.last_frame <= first_new + 3, "then it is read every frame until settled"
    assert new.readings >= 2 and new.crop is not None


def receding_box(n: int, x0: float = 100, y: float = 400) -> list[float]:
    """A plate moving away: 4% smaller every frame."""
    width = 200 * 0.96**n
    return [x0, y, x0 + width, y + width * 0.225]


def test_misreads_of_a_read_plate_are_not_a_new_pass():
    # As a plate recedes, it is read steadily as a look-alike, then a character short:
    # neither a new pass nor (smaller views than the read's) a correction.
    tracker = PlateTracker("front", "cam", config(decide_margin=1.9), HK)
    reads = []
    for n in range(40):
        f = frame(n)
        detections = dets(receding_box(n))
        (track,) = tracker.associate(f, detections)
        text = "AB1234" if n < 5 else "A81234" if n < 25 else "AB123"
        if tracker.wants_reading(track, f.timestamp):
            tracker.add_reading(track, f, detections.xyxy[0], reading(text, 0.95), 0.8)
        reads += tracker.collect(f.timestamp, after_frame=True)
    reads += tracker.collect(final=True)
    assert [r.plate for r in reads] == ["AB1234"]


def test_a_read_plate_is_rechecked_ever_less_often():
    tracker = PlateTracker("front", "cam", config(decide_margin=1.9, max_track_seconds=600), HK)
    ocr_calls = 0
    for n in range(300):  # a parked car, 30 s at 10 fps
        f = frame(n)
        detections = dets(moving_box(n, dx=0))
        (track,) = tracker.associate(f, detections)
        if tracker.wants_reading(track, f.timestamp):
            ocr_calls += 1
            tracker.add_reading(track, f, detections.xyxy[0], reading("AB1234", 0.95), 0.8)
        tracker.collect(f.timestamp, after_frame=True)
    # Every 0.3 s would be 100 readings; a tenth of the time since the read, at least
    # 0.3 s and at most 1 s, is 2 to decide, ~10 in the first 3 s, ~12 more to 10 s,
    # then 20 once a second.
    assert 35 <= ocr_calls <= 50, ocr_calls


def test_two_plates_in_view_are_two_tracks():
    tracker = PlateTracker("front", "cam", config(), HK)
    reads = []
    for n in range(5):
        boxes = [moving_box(n, x0=50, dx=10), moving_box(n, x0=900, dx=-10, y=300)]
        reads += step(tracker, n, boxes, [reading("AB12"), reading("CD345")])
    reads += tracker.collect(final=True)
    assert sorted(r.plate for r in reads) == ["AB12", "CD345"]


def test_fast_motion_with_dropped_frames_keeps_the_track():
    # Frames 0, 3, 6: the box jumps a whole width between them, never overlapping.
    tracker = PlateTracker("front", "cam", config(track_timeout_seconds=0.5), HK)
    reads = []
    for n in (0, 3, 6, 9):
        reads += step(tracker, n, [moving_box(n, dx=70)], [reading("JK777")])
    reads += tracker.collect(final=True)
    assert [(r.plate, r.frames) for r in reads] == [("JK777", 4)]


def test_the_same_plate_again_within_the_window_is_not_a_new_read():
    tracker = PlateTracker("front", "cam", config(dedup_seconds=5), HK)
    reads = []
    # Pass 1 (frames 0-4), gap of 1 s, pass 2 of the same plate: a duplicate.
    for n in range(5):
        reads += step(tracker, n, [moving_box(n)], [reading("LM5")])
    for n in range(5, 15):
        reads += step(tracker, n, [], [])
    for n in range(15, 20):
        reads += step(tracker, n, [moving_box(n - 15)], [reading("LM5")])
    # After the window: a new pass, a new read.
    for n in range(20, 90):
        reads += step(tracker, n, [], [])
    for n in range(90, 95):
        reads += step(tracker, n, [moving_box(n - 90)], [reading("LM5")])
    reads += tracker.collect(final=True)
    assert [r.plate for r in reads] == ["LM5", "LM5"]
    assert [r.first_frame for r in reads] == [0, 90]
    assert tracker.duplicates == 1


def test_a_track_without_enough_readings_gives_no_read():
    tracker = PlateTracker("front", "cam", config(min_reads=2), HK)
    reads = step(tracker, 0, [moving_box(0)], [reading("AB1")])
    reads += step(tracker, 1, [moving_box(1)], [None])
    reads += tracker.collect(final=True)
    assert reads == []


def test_a_long_track_reads_at_its_maximum_age():
    tracker = PlateTracker("front", "cam", config(max_track_seconds=1.0), HK)
    reads = []
    for n in range(25):  # a parked car, seen for 2.5 s
        reads += step(tracker, n, [[300, 300, 500, 345]], [reading("PK1")])
        if reads:
            break
    assert [r.plate for r in reads] == ["PK1"] and reads[0].last_frame == 10


@pytest.mark.parametrize("camera", ["front", "rear"])
def test_frames_carry_their_camera(camera):
    tracker = PlateTracker(camera, "cam", config(), HK)
    f = frame(0, camera=camera)
    (track,) = tracker.associate(f, dets(moving_box(0)))
    tracker.add_reading(track, f, np.array(moving_box(0)), reading("AB1"), 0.9)
    tracker.add_reading(track, f, np.array(moving_box(0)), reading("AB1"), 0.9)
    (read,) = tracker.collect(final=True)
    assert read.camera == camera


def test_search_regions_surround_where_live_plates_should_be():
    tracker = PlateTracker("front", "cam", config(), HK)
    for n in range(3):
        step(tracker, n, [moving_box(n, dx=20)], [reading("AB1")])
    (region,) = tracker.search_regions(frame(3).timestamp, (720, 1280))
    expected = moving_box(3, dx=20)
    assert region[0] < expected[0] and region[2] > expected[2]
    assert region[1] < expected[1] and region[3] > expected[3]
    assert region[2] - region[0] <= 3 * 200 + 2
    # Once the track has timed out there is nothing to search around.
    assert tracker.search_regions(frame(3).timestamp + 1.0, (720, 1280)) == []


def test_the_region_around_a_plate_cut_by_the_frame_side_is_sized_by_its_height():
    # An overtaking car's plate slides in from the right edge: 25 px of it show in
    # one frame, over 100 px in the next. Its height tells how big the plate is.
    tracker = PlateTracker("front", "cam", config(), HK)
    hw = (1080, 1920)
    step(tracker, 0, [[1895, 748, 1920, 811]], [None])
    (region,) = tracker.search_regions(frame(1).timestamp, hw)
    next_box = (1795, 710, 1920, 766)
    assert region[0] <= next_box[0] and region[2] >= next_box[2]
    assert region[1] <= next_box[1] and region[3] >= next_box[3]
    # ...and the same plate, five times as wide in view, continues its track.
    step(tracker, 1, [next_box], [None])
    assert tracker.live_tracks == 1
    # Wholly in view, a plate's own width sizes its region.
    inside = PlateTracker("front", "cam", config(follow_interval_seconds=0), HK)
    step(inside, 0, [[900, 748, 925, 811]], [None])
    (region,) = inside.search_regions(frame(1).timestamp, hw)
    assert region[2] - region[0] <= 3 * 63 + 2


def test_a_plate_leaving_the_picture_ends_its_track_at_once():
    tracker = PlateTracker("front", "cam", config(track_timeout_seconds=5.0), HK)
    reads = []
    for n in range(4):  # moving right, the last box touches the right border
        x2 = 1280 - 60 * (3 - n)
        reads += step(tracker, n, [[x2 - 200, 400, x2, 445]], [reading("EX1")])
    assert reads == []
    reads += step(tracker, 4, [], [])
    assert [r.plate for r in reads] == ["EX1"], "no wait for the 5 s timeout"


def test_reads_of_one_plate_by_both_cameras_are_linked():
    linker = PassLinker(window_seconds=30)
    tracker_front = PlateTracker("front", "cam", config(), HK)
    tracker_rear = PlateTracker("rear", "cam", config(), HK)
    for n in range(3):
        step(tracker_front, n, [moving_box(n)], [reading("CAR1")])
    (front,) = tracker_front.collect(final=True)
    for n in range(20, 23):
        step(tracker_rear, n, [moving_box(n - 20)], [reading("CAR1")])
    (rear,) = tracker_rear.collect(final=True)
    assert linker.link(front).linked_event_id is None
    assert linker.link(rear).linked_event_id == front.event_id
    # Another plate, or the same plate long after, is not linked.
    later = dataclasses.replace(
        rear, camera="front", first_seen=rear.first_seen + timedelta(minutes=5)
    )
    assert linker.link(later).linked_event_id is None


def test_an_early_read_waits_for_enough_evidence_over_the_other_readings():
    def decided_after(readings):
        tracker = PlateTracker("front", "cam", config(decide_margin=2.0), HK)
        for n, text in enumerate(readings):
            if step(tracker, n, [moving_box(n)], [text]):
                return n + 1
        return None

    # Two sure readings are enough; fair ones need a third.
    assert decided_after([reading("XY88", 1.0)] * 4) == 2
    assert decided_after([reading("XY88", 0.7)] * 4) == 3
    # A disagreeing reading has to be outweighed first.
    first = [reading("XY88", 0.95), reading("XY83", 0.9)]
    assert decided_after(first + [reading("XY88", 0.95)] * 4) == 5
    # Two readings about equally sure of different texts decide nothing early.
    assert decided_after([reading("XY88", 0.9), reading("XV83", 0.95)] * 3) is None
    # Nor does a vote that mixes positions from readings of other texts (XY88 here).
    y_sure = reading("XY83", chars=[0.9, 0.95, 0.9, 0.5])
    eight_sure = reading("XV88", chars=[0.9, 0.5, 0.9, 0.95])
    assert decided_after([y_sure, eight_sure] * 3) is None


def test_doubtful_agreeing_readings_do_not_decide_early():
    # A distant plate: five readings agree on "A888" but the second character is
    # uncertain each time; the closer, confident readings must still win the vote.
    tracker = PlateTracker("front", "cam", config(decide_margin=2.0), HK)
    reads = []
    doubtful = [0.97, 0.5, 0.9, 0.95]
    for n in range(5):
        reads += step(tracker, n, [moving_box(n)], [reading("A888", chars=doubtful)])
    assert reads == [], "not decided on doubtful characters"
    for n in range(5, 16):
        reads += step(tracker, n, [moving_box(n)], [reading("AB88", 0.99)])
    reads += tracker.collect(final=True)
    assert [r.plate for r in reads] == ["AB88"]


def test_between_frames_a_plate_at_the_border_is_not_taken_as_gone():
    tracker = PlateTracker("front", "cam", config(track_timeout_seconds=5.0), HK)
    for n in range(4):
        x2 = 1280 - 60 * (3 - n)
        step(tracker, n, [[x2 - 200, 400, x2, 445]], [reading("EX1")])
    # A tick without a frame (the live loop when no camera has a new one).
    assert tracker.collect(frame(3).timestamp + 0.005) == []
    assert tracker.live_tracks == 1


def test_a_long_track_ages_from_its_first_reading():
    tracker = PlateTracker("front", "cam", config(max_track_seconds=1.0), HK)
    reads = []
    for n in range(30):  # 3 s tracked while too small to read: no readings
        reads += step(tracker, n, [[300, 300, 340, 309]], [None])
    for n in range(30, 33):  # then read, doubtfully: not yet aged from the first reading
        reads += step(tracker, n, [[300, 300, 500, 345]], [reading("PK1", 0.5)])
    assert reads == []


def test_the_next_recording_of_a_camera_keeps_the_dedup_window():
    tracker = PlateTracker("front", "seg1.mp4", config(dedup_seconds=30), HK)
    reads = []
    for n in range(5):  # the car at the end of the first segment
        reads += step(tracker, n, [moving_box(n)], [reading("SEG1")])
    reads += tracker.collect(final=True)
    tracker.restart("seg2.mp4")
    # The next segment's frames restart at media time 0, wall-clock continues.
    for n in range(5):
        f = frame(n)
        f = dataclasses.replace(f, captured_utc=f.captured_utc + timedelta(seconds=1))
        (track,) = tracker.associate(f, dets(moving_box(n)))
        tracker.add_reading(track, f, np.array(moving_box(n)), reading("SEG1"), 0.9)
        reads += tracker.collect(f.timestamp, after_frame=True)
    reads += tracker.collect(final=True)
    assert [(r.plate, r.source) for r in reads] == [("SEG1", "seg1.mp4")]
    assert tracker.duplicates == 1 and tracker.source == "seg2.mp4"


def test_tracks_needing_no_reading_are_followed_only_now_and_then():
    cfg = config(decide_margin=1.5, follow_interval_seconds=0.25, min_read_width=60)
    tracker = PlateTracker("front", "cam", cfg, HK)
    hw = (720, 1280)
    # Being read (wide enough, undecided): searched around every frame.
    step(tracker, 0, [moving_box(0)], [reading("XY88")])
    assert len(tracker.search_regions(frame(1).timestamp, hw)) == 1
    # Decided after two agreeing readings: only once its last sighting is a follow
    # interval old (0.25 s = 2.5 frames at 10 fps).
    step(tracker, 1, [moving_box(1)], [reading("XY88")])
    assert tracker.search_regions(frame(2).timestamp, hw) == []
    assert tracker.search_regions(frame(4).timestamp, hw) != []
    # Too small to read yet: followed now and then as well.
    small = PlateTracker("front", "cam", cfg, HK)
    step(small, 0, [[500, 300, 540, 310]], [None])
    assert small.search_regions(frame(1).timestamp, hw) == []
    assert small.search_regions(frame(3).timestamp, hw) != []
    # At the frame's border every frame, so a miss there really means it left.
    border = PlateTracker("front", "cam", cfg, HK)
    step(border, 0, [[0, 300, 40, 310]], [None])
    assert len(border.search_regions(frame(1).timestamp, hw)) == 1
    # 0 follows every track every frame.
    every = PlateTracker("front", "cam", dataclasses.replace(cfg, follow_interval_seconds=0), HK)
    step(every, 0, [[500, 300, 540, 310]], [None])
    assert len(every.search_regions(frame(1).timestamp, hw)) == 1


def test_a_cross_boundary_read_carries_its_marks_and_its_vehicles_plate():
    """The HK plate and, under it, the car's cross-boundary plate, tracked together:
    the lower plate's read has the marked text most of its readings gave and the plate
    of the track above it; the HK plate's read has neither."""
    tracker = PlateTracker("front", "cam", TrackingConfig(decide_margin=0, min_reads=2))
    hk_box, cb_box = (500, 300, 700, 345), (520, 350, 680, 395)
    cb = reading("Z1234")
    marked = [
        dataclasses.replace(cb, marked_text="粤Z1234港"),
        dataclasses.replace(cb, marked_text="Z1234港"),  # a frame that missed 粤
        dataclasses.replace(cb, marked_text="粤Z1234港"),
    ]
    for n in range(3):
        step(tracker, n, [hk_box, cb_box], [reading("AB1234"), marked[n]])
    reads = tracker.collect(final=True)
    by_plate = {r.plate: r for r in reads}
    assert by_plate["Z1234"].kind == "crossboundary"
    assert by_plate["Z1234"].marked_plate == "粤Z1234港"
    assert by_plate["Z1234"].vehicle_plate == "AB1234"
    assert by_plate["AB1234"].kind == "plate" and by_plate["AB1234"].vehicle_plate is None
