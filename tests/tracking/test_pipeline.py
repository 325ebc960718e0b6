"""The video pipeline end to end with the real models: replay of generated dashcam
clips, and the live service on two real network streams (ffmpeg) and on files."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from edge.bench.latency import legible_summary
from edge.bench.video import (
    STAGES,
    format_report,
    legible_latencies_ms,
    legible_to_decision_ms,
    profile_json,
    score_reads,
)
from edge.capture.videofile import VideoFile
from edge.config import load_config
from edge.recognition.recognize import open_recognizer
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec, ClipTruth
from edge.tracking.pipeline import FramePipeline, ScanSchedule, StageTimes
from edge.types import PlateRead
from edge.vehicle.replay import replay_file
from tests.conftest import model_path
from tests.streams import StreamServer

# Three passes at 15 fps keep the replay test to about a hundred frames.
REPLAY = ClipSpec(size=(1280, 720), fps=15, plates=("KT4821", "PX507", "AB88"), seed=5)
LIVE = ClipSpec(size=(960, 540), fps=15, plates=("HN2468", "TV135"), seed=8)
READ_KEYS = {
    "type",
    "event_id",
    "camera",
    "plate",
    "confidence",
    "frames",
    "first_frame",
    "last_frame",
    "first_seen",
    "last_seen",
    "box",
    "source",
}


LPR_EDGE = (sys.executable, "-m", "edge")


def lpr_edge(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*LPR_EDGE, *args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def models():
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")


@pytest.fixture(scope="module")
def replay_clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("replay") / "dashcam.mp4"
    return path, render_clip(path, REPLAY)


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("live") / "traffic.mp4"
    return path, render_clip(path, LIVE)


def test_replay_reads_every_pass_once(models, replay_clip):
    path, truth = replay_clip
    reads = []
    with open_recognizer(load_config(None)) as recognizer:
        pipeline = FramePipeline(recognizer, load_config(None).tracking)
        result = replay_file(pipeline, path, "front-left", on_read=reads.append)
    assert result.error is None and result.frames == truth.frame_count
    assert sorted(r.plate for r in reads) == sorted(p.text for p in truth.passes)
    for read in reads:
        (expected,) = [p for p in truth.passes if p.text == read.plate]
        assert expected.first_frame <= read.first_frame <= read.last_frame <= expected.last_frame
        assert read.camera == "front-left" and read.source == str(path)
        assert read.crop is not None and read.crop.size
        assert read.frames >= read.readings >= 2


def test_replay_command_reports_bad_files_and_goes_on(models, replay_clip, tmp_path):
    path, truth = replay_clip
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    out = tmp_path / "reads.jsonl"
    result = lpr_edge(
        "replay",
        str(corrupt),
        str(path),
        str(tmp_path / "missing.mp4"),
        "--camera",
        "rear-right",
        "--start",
        "2026-11-23T08:00:00Z",
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stderr
    assert f"{corrupt}:" in result.stderr and "missing.mp4:" in result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["plate"] for r in records) == sorted(p.text for p in truth.passes)
    for record in records:
        assert set(record) >= READ_KEYS
        assert record["type"] == "read" and record["camera"] == "rear-right"
        # Wall-clock time is the given start plus the media time of the frame.
        offset = record["first_frame"] / truth.fps
        assert record["first_seen"].startswith("2026-11-23T08:00:")
        assert abs(float(record["first_seen"][17:23]) - offset) < 0.1
    summary = json.loads(result.stderr.strip().splitlines()[-1])["summary"]
    assert summary["files"] == 3 and summary["failed"] == 2
    assert summary["reads"] == len(truth.passes) and summary["frames"] == truth.frame_count


def test_realtime_replay_drops_what_it_cannot_process(models, replay_clip, tmp_path):
    path, truth = replay_clip
    result = lpr_edge("replay", str(path), "--realtime", "--out", str(tmp_path / "r.jsonl"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr.strip().splitlines()[-1])["summary"]
    # Paced at 15 fps, frames processing cannot keep up with are skipped, never queued.
    assert summary["frames"] + summary["frames_skipped"] == truth.frame_count
    assert summary["frames"] > 0


def write_config(path: Path, cameras: list[tuple[str, str]], **extra: str) -> Path:
    lines = []
    for name, source in cameras:
        lines += [
            "[[cameras]]",
            f'name = "{name}"',
            f'source = "{source}"',
            "reconnect_min_seconds = 0.2",
            "reconnect_max_seconds = 1.0",
            "stall_seconds = 1.5",
            *[f"{k} = {v}" for k, v in extra.items()],
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_run_processes_two_live_streams_through_a_restart(models, live_clip, tmp_path):
    clip, truth = live_clip
    with (
        StreamServer(clip, "udp", tmp_path) as front,
        StreamServer(clip, "tcp", tmp_path) as rear,
    ):
        config = write_config(
            tmp_path / "edge.toml", [("front-left", front.url), ("rear-right", rear.url)]
        )
        run = subprocess.Popen(
            [*LPR_EDGE, "--log-level", "debug", "run", "--config", str(config), "--duration", "24"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(9)
            front.kill()  # the front camera's stream goes away...
            time.sleep(3)
            front.start()  # ...and comes back on the same port
            stdout, stderr = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, stderr[-3000:]
    stats = last_json_line(stdout)
    cams = stats["cameras"]
    assert set(cams) == {"front-left", "rear-right"}
    for name, cam in cams.items():
        assert cam["frames_processed"] > 20, (name, cam)
        assert cam["frames_in"] >= cam["frames_processed"] + cam["frames_dropped"] - 1
        assert cam["fps_processed"] > 0
    assert cams["front-left"]["reconnects"] >= 1
    # The clip loops; each plate is one read per camera (repeats are the same pass
    # within the dedup window), and both cameras saw the traffic.
    plates = [p.text for p in truth.passes]
    reads = [line for line in stderr.splitlines() if '"read ' in line or "read " in line]
    for name in cams:
        seen = {p for p in plates if any(f"read {p} on {name}" in line for line in reads)}
        assert seen, f"{name} read none of {plates}"
    assert stats["reads"] >= 2
    assert stats["latency_ms"]["p95"] is not None
    # The health it wrote for `lpr-edge status`, last of all that it stopped.
    status = lpr_edge("status", "--config", str(config), "--json")
    assert status.returncode == 1, status.stderr  # not running any more
    health = json.loads(status.stdout)
    assert health["state"] == "stopped" and not health["running"]
    assert set(health["cameras"]) == {"front-left", "rear-right"}
    # No broker here: the service's start and stop audit records wait for one.
    assert health["outbox"]["pending"] >= 1 and health["disk_free_mb"] > 0
    assert health["broker"] is None
    human = lpr_edge("status", "--config", str(config))
    assert "camera front-left" in human.stdout and "stopped at" in human.stdout


def test_sigterm_stops_cleanly_and_delivers_what_was_read(models, live_clip, tmp_path):
    clip, _truth = live_clip
    config = write_config(tmp_path / "edge.toml", [("front-left", str(clip))], loop="true")
    run = subprocess.Popen(
        [*LPR_EDGE, "--log-level", "debug", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(10)
        run.send_signal(signal.SIGTERM)
        began = time.monotonic()
        stdout, stderr = run.communicate(timeout=30)
        stopping = time.monotonic() - began
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr[-3000:]
    # Generous bound for a shared machine; the design target is well under this.
    assert stopping < 10
    stats = last_json_line(stdout)
    assert stats["cameras"]["front-left"]["frames_processed"] > 0
    delivered = sum(
        1 for line in stderr.splitlines() if "read " in line and " on front-left" in line
    )
    assert delivered == stats["reads"], "every read made before the stop was delivered"


def bench_read(plate: str, **fields) -> PlateRead:
    """A read as the bench scores it; ``fields`` override the defaults."""
    now = datetime.now(UTC)
    values = dict(
        event_id=plate,
        camera="front-left",
        source="clip",
        plate=plate,
        confidence=0.9,
        candidates=(),
        frames=3,
        readings=3,
        first_seen=now,
        last_seen=now,
        first_frame=0,
        last_frame=2,
        box=(0, 0, 1, 1),
        crop=None,
        last_capture_mono=0.0,
        emitted_mono=0.0,
    )
    values.update(fields)
    return PlateRead(**values)


def test_bench_scores_reads_against_legible_passes(replay_clip):
    _path, truth = replay_clip
    plates = [p.text for p in truth.passes]
    reads = [bench_read(plates[0]), bench_read(plates[0]), bench_read(plates[1])]
    score = score_reads(truth, [*reads, bench_read("ZZ999")])
    assert (score.passes, score.exact, score.wrong, score.duplicates) == (3, 2, 1, 1)


def test_legible_to_read_latency_is_reported_by_kind_of_pass(replay_clip):
    _path, truth = replay_clip
    legible = next(p for p in truth.passes if p.first_legible_frame is not None)
    # Read from a frame 3 frames after the plate became legible, 0.5 s after its capture.
    read = bench_read(
        legible.text,
        first_frame=legible.first_legible_frame,
        last_frame=legible.first_legible_frame + 3,
        last_capture_mono=100.0,
        emitted_mono=100.5,
    )
    ((kind, ms),) = legible_latencies_ms(truth, [read])
    assert kind == legible.kind and ms == pytest.approx((0.5 + 3 / truth.fps) * 1e3)
    # Of which the video time to the deciding frame: the 3 frames, not the 0.5 s.
    ((kind, ms),) = legible_to_decision_ms(truth, [read])
    assert kind == legible.kind and ms == pytest.approx(3 / truth.fps * 1e3)
    # A read decided before the plate counted as legible waited no video time; a later
    # read of the same text is a duplicate, not the pass's latency.
    early = dataclasses.replace(read, last_frame=legible.first_legible_frame - 2)
    later = dataclasses.replace(read, last_frame=read.last_frame + 30, emitted_mono=200.0)
    assert legible_to_decision_ms(truth, [later, early]) == [(legible.kind, 0.0)]

    summary = legible_summary([("approach", 100.0), ("approach", 300.0), ("cross", 50.0)])
    assert (summary["p50"], summary["max"]) == (100.0, 300.0)
    assert summary["by_kind"] == {
        "approach": {"passes": 2, "p50": 200.0, "p95": 290.0, "max": 300.0},
        "cross": {"passes": 1, "p50": 50.0, "p95": 50.0, "max": 50.0},
    }


def test_pipeline_profile_adds_up_over_a_few_frames(models, replay_clip):
    path, _truth = replay_clip
    config = load_config(None)
    with open_recognizer(config) as recognizer, VideoFile(path, "front-left") as video:
        recognizer.detector.times.reset()
        pipeline = FramePipeline(recognizer, config.tracking)
        pipeline.add_camera("front-left", str(path))
        began = time.perf_counter()
        for frame, _ in zip(video, range(12), strict=False):
            pipeline.process(frame)
        wall_ms = (time.perf_counter() - began) * 1e3
        detector_runs = recognizer.detector.times.runs
    times = pipeline.times["front-left"]
    assert times.frames == 12
    # The first frame is always searched whole: the detector ran and was timed.
    assert times.scans >= 1 and times.detector_runs == detector_runs >= 1
    assert times.infer_ms > 0 and times.preprocess_ms > 0 and times.postprocess_ms > 0
    detector_parts = times.preprocess_ms + times.infer_ms + times.postprocess_ms
    assert detector_parts <= times.detect_ms + 1e-6
    stages = times.detect_ms + times.ocr_ms + times.track_ms
    assert stages == pytest.approx(times.busy_ms, rel=1e-6)
    assert times.busy_ms <= wall_ms
    assert times.detect_other_ms >= 0

    profile = profile_json(times, wall_ms / 1e3)
    assert set(profile["stages"]) == {name for name, _field in STAGES}
    assert sum(s["percent"] for s in profile["stages"].values()) == pytest.approx(100, abs=0.5)
    assert 0 < profile["busy_percent_of_wall"] <= 100
    assert profile["stages"]["detector"]["ms_per_frame"] > 0
    # Two cameras' times add field by field (the bench's total column).
    both = times.add(times)
    assert both.frames == 24 and both.infer_ms == pytest.approx(2 * times.infer_ms)
    assert StageTimes().add(times).busy_ms == times.busy_ms


def test_bench_report_shows_the_profile_and_memory():
    times = StageTimes(
        frames=10,
        busy_ms=100.0,
        detect_ms=90.0,
        preprocess_ms=10.0,
        infer_ms=70.0,
        postprocess_ms=5.0,
        ocr_ms=6.0,
        track_ms=4.0,
        detector_runs=12,
    )
    profile = profile_json(times, 2.0)
    assert profile["stages"]["detector"] == {"ms_per_frame": 7.0, "percent": 70.0}
    assert profile["stages"]["detect_other"] == {"ms_per_frame": 0.5, "percent": 5.0}
    assert profile["busy_percent_of_wall"] == 5.0
    decode = {
        "frames": 20,
        "ms_per_frame": 9.0,
        "grab_ms_per_frame": 6.0,
        "retrieve_ms_per_frame": 3.0,
        "percent_of_wall": 9.0,
    }
    cam = {
        "frames_in": 20,
        "frames_processed": 10,
        "frames_dropped": 10,
        "fps_processed": 5.0,
        "reads": {"passes": 1, "read_exactly": 1, "wrong_reads": 0, "duplicate_reads": 0},
        "profile": profile,
        "decode": decode,
    }
    report = {
        "clip": {"size": [1920, 1080], "fps": 30, "seconds": 2},
        "live": {
            "cameras": {"front-left": cam},
            "latency_ms": {"p50": 90.0, "p95": 120.0},
            "legible_to_read_ms": legible_summary([("follow", 400.0), ("overtake", 150.0)]),
            "legible_to_decision_ms": legible_summary([("follow", 300.0), ("overtake", 100.0)]),
            "total": {
                "profile": profile,
                "decode": decode,
                "publish": {"reads": 1, "ms_per_read": 0.01, "sink": "list"},
            },
        },
        "replay": {
            "frames": 60,
            "fps": 75.0,
            "realtime_factor": 2.5,
            "reads": {
                "passes": 2,
                "read_exactly": 2,
                "exact_rate": 1.0,
                "wrong_reads": 0,
                "duplicate_reads": 0,
            },
            "legible_to_decision_ms": legible_summary([("cross", 33.3), ("approach", 433.3)]),
            "profile": profile,
        },
        "memory": {"peak_rss_mb": 512.0, "rss_mb": 400.0},
    }
    text = format_report(report)
    assert "detector" in text and "7.00 (70.0%)" in text
    assert "decode (capture)" in text and "9.00" in text
    assert "peak RSS 512.0 MiB" in text
    assert "plate first legible to read: p50 275.0" in text
    assert "by kind of pass: follow (1) p50 400.0 p95 400.0, overtake (1)" in text
    assert "legible to the deciding frame (video time): p50 200.0  p95 290.0  max 300.0" in text
    replay = text[text.index("replay, every frame") :]
    assert "2.5x real time" in replay and "deciding frame (video time): p50 233.3" in replay


def scan_times(schedule: ScanSchedule, cameras: tuple[str, ...], seconds: float, fps: float = 30):
    """When each camera scanned, the cameras' frames taken in turn on one clock (a few
    milliseconds apart, as the processing thread's round robin takes them)."""
    scans: dict[str, list[float]] = {name: [] for name in cameras}
    for n in range(int(seconds * fps)):
        for k, name in enumerate(cameras):
            t = n / fps + 0.004 * k
            if schedule.due(name, t):
                scans[name].append(t)
    return scans


def test_one_camera_scans_every_interval():
    (scans,) = scan_times(ScanSchedule(0.25), ("front",), 3.0).values()
    assert scans[0] == 0.0
    assert all(0.23 <= b - a <= 0.27 for a, b in pairwise(scans))
    assert len(scan_times(ScanSchedule(0.0), ("front",), 1.0)["front"]) == 30


def test_two_cameras_scan_spread_over_the_interval():
    scans = scan_times(ScanSchedule(0.25), ("front-left", "rear-right"), 5.0)
    left, right = scans["front-left"], scans["rear-right"]
    # Both start at once; from then on they take turns, a quarter-interval apart at
    # least, instead of both scanning in the same round.
    assert left[0] == 0.0 and right[0] == 0.004
    later = [(t, "L") for t in left[1:]] + [(t, "R") for t in right[1:]]
    later.sort()
    assert all(b[0] - a[0] >= 0.0625 for a, b in pairwise(later))
    # Neither camera is held back much: scans still come about every interval.
    for own in (left, right):
        gaps = [b - a for a, b in pairwise(own)]
        assert max(gaps) < 0.375 and len(own) >= 17


def test_a_camera_on_its_own_clock_is_not_held_back():
    schedule = ScanSchedule(0.25)
    # A replayed file's media time next to a live camera's monotonic clock.
    scans = []
    for n in range(90):
        schedule.due("live", 5000.0 + n / 30)
        if schedule.due("file", n / 30):
            scans.append(n / 30)
    assert all(0.23 <= b - a <= 0.27 for a, b in pairwise(scans))


def test_a_restarted_camera_scans_its_first_frame():
    schedule = ScanSchedule(0.25)
    assert schedule.due("front", 10.0)
    assert not schedule.due("front", 10.1)
    schedule.forget("front")
    assert schedule.due("front", 0.0)


def test_a_flapping_camera_does_not_starve_the_others():
    # A stream that reconnects every frame scans every frame (each is its first); the
    # other camera's scans wait half an interval at most for it.
    schedule = ScanSchedule(0.25)
    scans = []
    for n in range(60):
        schedule.forget("flapping")
        assert schedule.due("flapping", n / 30)
        if schedule.due("steady", n / 30 + 0.004):
            scans.append(n / 30)
    assert scans[0] == 0.0 and len(scans) >= 5
    assert all(b - a <= 0.375 + 1 / 30 for a, b in pairwise(scans))
