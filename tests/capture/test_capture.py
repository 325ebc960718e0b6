"""The source stage on real files and real ffmpeg network streams.

Timing checks are one-sided (a paced frame is never early) or use generous polling
deadlines: the suite shares two cores with other work.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from edge.capture.camera import Camera
from edge.capture.sources import SourceError, SourceState, classify_source
from edge.capture.videofile import VideoFile
from edge.config import CameraConfig
from edge.textrules import redact
from edge.types import Frame
from tests.streams import FPS, HEIGHT, WIDTH, StreamServer, frame_index, remux_faststart, write_clip

WAIT_S = 20.0


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def drain(camera: Camera, until: Callable[[list[Frame]], bool], timeout: float = WAIT_S):
    """Take frames as fast as they come until ``until(frames)`` holds."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(frames):
        frame = camera.take(0.2)
        if frame is not None:
            frames.append(frame)
    return frames


def counts_consistent(camera: Camera) -> bool:
    s = camera.stats()
    return 0 <= s.frames_in - s.frames_dropped - s.frames_processed <= camera.config.buffer_frames


def live_config(source: str, **overrides) -> CameraConfig:
    values = {
        "name": "front",
        "source": source,
        "stall_seconds": 1.0,
        "reconnect_min_seconds": 0.1,
        "reconnect_max_seconds": 0.5,
    }
    values.update(overrides)
    return CameraConfig(**values)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "long": write_clip(folder / "long.mp4", frames=75),
        "short": write_clip(folder / "short.mp4", frames=25),
        "avi": write_clip(folder / "long.avi", frames=75, fourcc="MJPG"),
    }


# --- classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("/dev/video0", "device"),
        ("0", "device"),
        ("2", "device"),
        ("/dev/v4l/by-id/usb-cam-video-index0", "device"),
        ("rtsp://10.0.0.5:554/stream1", "network"),
        ("RTSP://10.0.0.5/stream1", "network"),
        ("rtsps://cam/s", "network"),
        ("http://cam/video.mjpg", "network"),
        ("https://cam/live.m3u8", "network"),
        ("udp://0.0.0.0:5000", "network"),
        ("tcp://10.0.0.5:9000", "network"),
        ("rtmp://server/live/key", "network"),
        ("recordings/front.mp4", "file"),
        ("/data/2024-05-01 front.mkv", "file"),
        ("video0", "file"),
        ("ftp://host/file.mp4", "file"),
    ],
)
def test_classify_source(source, kind):
    assert classify_source(source) == kind


def test_redact_hides_passwords_only():
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact("rtsp://admin:p@ss@[fe80::1]:554/s1") == "rtsp://admin:***@[fe80::1]:554/s1"
    assert redact("rtsp://viewer@10.0.0.5/s1") == "rtsp://viewer@10.0.0.5/s1"
    assert redact("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact("/data/front.mp4") == "/data/front.mp4"


# --- VideoFile ---------------------------------------------------------------------


def test_video_file_reads_every_frame_in_order(clips):
    with VideoFile(clips["long"], "front") as video:
        assert (video.fps, video.fps_known) == (FPS, True)
        assert video.frame_count == 75
        assert video.size == (WIDTH, HEIGHT)
        assert video.duration_s == pytest.approx(3.0)
        frames = list(video)
    assert [f.frame_number for f in frames] == list(range(75))
    assert [frame_index(f.image) for f in frames] == list(range(75))
    assert [f.seq for f in frames] == list(range(75))
    media = [f.media_ms for f in frames]
    assert media[0] == 0.0
    assert all(b > a for a, b in pairwise(media))
    assert media[-1] == pytest.approx(74 * 1000 / FPS)
    assert all(f.timestamp == f.media_ms / 1000 for f in frames)
    assert all(f.camera == "front" and f.image.shape == (HEIGHT, WIDTH, 3) for f in frames)
    assert all(f.captured_utc.utcoffset().total_seconds() == 0 for f in frames)
    assert all(b.captured_mono >= a.captured_mono for a, b in pairwise(frames))
    assert video.ended and not video.truncated and video.frames_read == 75
    # Every frame after the first (decoded on opening) was timed.
    times = video.decode_times
    assert times.frames == 74
    assert times.grab_s > 0 and times.retrieve_s > 0
    assert times.total_s == times.grab_s + times.retrieve_s


def test_video_file_reads_mjpeg_avi(clips):
    with VideoFile(clips["avi"], "rear") as video:
        assert [frame_index(f.image) for f in video] == list(range(75))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: d, "is a directory"),
        (
            lambda d: _write(d / "notes.mp4", b"these are not the frames you are looking for\n"),
            "not a video",
        ),
        (lambda d: _write(d / "empty.mp4", b""), "empty"),
    ],
    ids=["missing", "directory", "text-as-mp4", "empty"],
)
def test_video_file_refuses_unusable_files(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=reason) as info:
        VideoFile(path, "front")
    assert str(path) in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_mp4_cut_before_it_was_finalised_is_explained(clips, tmp_path):
    # cv2's MP4 writer puts the index at the end, as most dashcams do: cut it off.
    data = clips["long"].read_bytes()
    cut = _write(tmp_path / "cut.mp4", data[: len(data) // 2])
    with pytest.raises(SourceError, match="without its index"):
        VideoFile(cut, "front")


@pytest.mark.parametrize("kind", ["avi", "mp4-index-first"])
def test_truncated_file_ends_cleanly_and_says_so(clips, tmp_path, kind):
    if kind == "avi":
        whole = clips["avi"]
    else:
        whole = remux_faststart(clips["long"], tmp_path / "faststart.mp4")
    data = whole.read_bytes()
    half = _write(tmp_path / f"half{whole.suffix}", data[: len(data) // 2])
    with VideoFile(half, "front") as video:
        assert video.frame_count == 75
        frames = list(video)
    assert video.truncated
    assert 10 < video.frames_read < 75
    assert len(frames) == video.frames_read
    assert [frame_index(f.image) for f in frames[:10]] == list(range(10))


def test_video_file_realtime_is_never_early(clips):
    with VideoFile(clips["short"], "front", realtime=True) as video:
        frames = list(video)
    assert video.frames_read == 25
    assert len(frames) + video.frames_skipped == 25
    start = frames[0].captured_mono
    for frame in frames:
        assert frame.captured_mono - start >= frame.frame_number / FPS - 0.002
        assert frame_index(frame.image) == frame.frame_number


def test_video_file_realtime_skips_what_a_slow_consumer_missed(clips):
    taken: list[Frame] = []
    with VideoFile(clips["long"], "front", realtime=True) as video:
        for frame in video:
            taken.append(frame)
            if len(taken) == 12:
                break
            time.sleep(0.1)  # 2.5 frame intervals of "processing"
        assert video.frames_skipped > 0
        assert video.frames_read == len(taken) + video.frames_skipped
    numbers = [f.frame_number for f in taken]
    assert numbers == sorted(set(numbers))
    assert sum(b - a - 1 for a, b in pairwise(numbers)) == video.frames_skipped
    assert all(frame_index(f.image) == f.frame_number for f in taken)
    assert all(f.seq == f.frame_number for f in taken)


# --- Camera on files ---------------------------------------------------------------


def test_camera_plays_a_file_at_its_frame_rate_and_ends(clips):
    camera = Camera(live_config(str(clips["short"]), name="rear")).start()
    try:
        frames = drain(camera, lambda got: camera.ended)
        assert camera.wait_ended(WAIT_S)
        last = camera.take(0)
        frames += [last] if last is not None else []
        stats = camera.stats()
    finally:
        assert camera.stop()
    assert stats.state is SourceState.ENDED
    assert stats.frames_in == 25
    assert stats.frames_in == stats.frames_dropped + stats.frames_processed
    assert stats.reconnects == 0
    # The capture thread timed its decoding (all frames but the one opening decoded).
    assert camera.decode_times.frames == 24 and camera.decode_times.total_s > 0
    assert frames and frames[0].camera == "rear"
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] <= 24
    assert all(f.frame_number == f.seq == frame_index(f.image) for f in frames)
    assert all(f.timestamp == f.captured_mono for f in frames)
    assert all(f.media_ms == pytest.approx(f.frame_number * 1000 / FPS) for f in frames)
    # Paced like a camera: frame n is captured no sooner than n intervals after frame 0.
    if frames[0].seq == 0:
        start = frames[0].captured_mono
        assert all(f.captured_mono - start >= f.seq / FPS - 0.005 for f in frames)


def test_camera_drops_frames_a_slow_consumer_did_not_take(clips):
    camera = Camera(live_config(str(clips["long"]))).start()
    taken: list[Frame] = []
    try:
        assert camera.wait_state(SourceState.CONNECTED, timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while len(taken) < 8 and time.monotonic() < deadline:
            frame = camera.take(1.0)
            if frame is not None:
                taken.append(frame)
                time.sleep(0.15)  # slower than the 40 ms frame interval
        stats = camera.stats()
        assert counts_consistent(camera)
    finally:
        assert camera.stop()
    assert len(taken) == 8
    assert stats.frames_dropped > 0
    assert stats.frames_processed == len(taken)
    assert stats.frames_in >= stats.frames_processed + stats.frames_dropped
    seqs = [f.seq for f in taken]
    assert seqs == sorted(set(seqs))
    assert all(frame_index(f.image) == f.frame_number for f in taken)
    assert camera.state is SourceState.STOPPED


def test_camera_buffers_frames_through_a_short_pause(clips):
    # A consumer busy for a couple of frame intervals (a whole-frame search) then
    # catches up: nothing is dropped, and frames come oldest first.
    # (The age bound is raised: this is about the count, on a machine of any speed.)
    config = live_config(str(clips["long"]), buffer_frames=6, buffer_max_age_seconds=1.0)
    camera = Camera(config).start()
    taken: list[Frame] = []
    try:
        first = camera.take(WAIT_S)
        assert first is not None
        taken.append(first)
        time.sleep(0.06)  # 1.5 frame intervals
        taken += drain(camera, lambda got: len(got) >= 8)
        stats = camera.stats()
    finally:
        assert camera.stop()
    seqs = [f.seq for f in taken]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert stats.frames_dropped == 0


def test_camera_skips_buffered_frames_grown_too_old(clips):
    # Under lasting overload the buffer must not turn into latency.
    config = live_config(str(clips["long"]), buffer_frames=8, buffer_max_age_seconds=0.05)
    camera = Camera(config).start()
    try:
        assert camera.take(WAIT_S) is not None
        time.sleep(0.25)  # 6 frame intervals: all would still fit in the buffer
        frame = camera.take(1.0)
        stats = camera.stats()
    finally:
        assert camera.stop()
    assert frame is not None
    assert time.monotonic() - frame.captured_mono < 1.0
    assert stats.frames_dropped >= 3
    assert frame.seq >= stats.frames_in - 3


def test_camera_with_a_one_frame_buffer_keeps_the_newest(clips):
    camera = Camera(live_config(str(clips["long"]), buffer_frames=1)).start()
    try:
        assert camera.take(WAIT_S) is not None
        time.sleep(0.2)  # 5 frame intervals
        frame = camera.take(1.0)
        stats = camera.stats()
    finally:
        assert camera.stop()
    assert frame is not None
    assert stats.frames_dropped >= 3
    # The newest when taken (seq is 0-based; one more may have come in since).
    assert frame.seq >= stats.frames_in - 2


def test_camera_loops_a_file(clips):
    camera = Camera(live_config(str(clips["short"]), loop=True)).start()
    try:
        frames = drain(
            camera,
            lambda got: len(got) > 2 and got[-1].frame_number < got[-2].frame_number,
        )
        assert len(frames) > 2 and frames[-1].frame_number < frames[-2].frame_number
        assert camera.state is SourceState.CONNECTED
        assert camera.stats().reconnects == 0
        assert counts_consistent(camera)
    finally:
        assert camera.stop()
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))  # seq runs on across the restart
    assert frames[-1].seq >= 25


def test_camera_ends_a_truncated_file_and_says_so_once(clips, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edge.capture")
    data = clips["avi"].read_bytes()
    half = _write(tmp_path / "half.avi", data[: len(data) // 3])
    camera = Camera(live_config(str(half))).start()
    try:
        assert camera.wait_ended(WAIT_S)
        stats = camera.stats()
    finally:
        assert camera.stop()
    assert 10 < stats.frames_in < 75
    notes = [r.message for r in caplog.records if "truncated" in r.message]
    assert len(notes) == 1 and f"read {stats.frames_in} of 75 frames" in notes[0]


def test_missing_file_fails_retries_quietly_and_recovers(clips, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edge.capture")
    later = tmp_path / "later.mp4"
    broken = Camera(
        live_config(str(later), name="rear", reconnect_min_seconds=0.05, reconnect_max_seconds=0.1)
    ).start()
    working = Camera(live_config(str(clips["long"]), name="front", loop=True)).start()
    try:
        assert broken.wait_state(SourceState.FAILED, timeout=WAIT_S)
        assert "no such file" in (broken.stats().last_error or "")
        # The other camera is unaffected.
        assert drain(working, lambda got: len(got) >= 5)
        assert wait_for(lambda: _warnings_for(caplog, "rear") >= 3)
        time.sleep(0.5)  # several more retries
        assert _warnings_for(caplog, "rear") <= 3
        assert broken.state is SourceState.FAILED
        # The file appears (atomically, as a recorder's rename would): it is picked up.
        shutil.copy(clips["short"], tmp_path / "tmp.mp4")
        os.replace(tmp_path / "tmp.mp4", later)
        assert broken.wait_state(SourceState.CONNECTED, SourceState.ENDED, timeout=WAIT_S)
        assert broken.wait_ended(WAIT_S)
        assert broken.stats().frames_in == 25
    finally:
        assert broken.stop()
        assert working.stop()


def _warnings_for(caplog, camera: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "edge.capture"
        and r.levelno == logging.WARNING
        and f"camera {camera}:" in r.message
    )


def test_missing_device_is_reported_and_retried():
    camera = Camera(live_config("/dev/video99")).start()
    try:
        assert camera.wait_state(SourceState.FAILED, timeout=WAIT_S)
        assert "/dev/video99 does not exist" in (camera.stats().last_error or "")
        assert camera.take(0.2) is None
    finally:
        assert camera.stop()
    assert camera.state is SourceState.STOPPED


# --- Camera on real network streams ------------------------------------------------


@pytest.fixture(params=["udp", "tcp"])
def stream(request, clips, tmp_path):
    server = StreamServer(clips["long"], request.param, tmp_path)
    yield server.start()
    server.stop()


def _network_camera(stream: StreamServer) -> Camera:
    return Camera(live_config(stream.url), open_timeout_s=2.0)


def test_camera_reads_a_network_stream(stream):
    camera = _network_camera(stream).start()
    try:
        frames = drain(camera, lambda got: len(got) >= 15)
        assert len(frames) >= 15, stream.log_tail()
        stats = camera.stats()
        assert stats.state is SourceState.CONNECTED
        assert stats.fps_in > 0
        assert counts_consistent(camera)
    finally:
        assert camera.stop()
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert all(f.frame_number is None and f.media_ms is None for f in frames)
    assert all(f.timestamp == f.captured_mono for f in frames)
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) for f in frames)
    assert all(0 <= frame_index(f.image) < 75 for f in frames)


def test_camera_reconnects_when_the_stream_comes_back(stream):
    camera = _network_camera(stream).start()
    try:
        assert drain(camera, lambda got: len(got) >= 5), stream.log_tail()
        stream.kill()
        assert camera.wait_state(SourceState.RECONNECTING, timeout=WAIT_S)
        assert "stream" in (camera.stats().last_error or "")
        before = camera.stats().frames_in
        stream.start()
        assert drain(camera, lambda got: len(got) >= 5), stream.log_tail()
        stats = camera.stats()
        assert stats.reconnects >= 1
        assert stats.frames_in > before
        assert stats.state is SourceState.CONNECTED
        assert counts_consistent(camera)
    finally:
        started = time.monotonic()
        assert camera.stop()
    assert time.monotonic() - started < 5


def test_stop_returns_promptly_while_the_stream_is_stalled(clips, tmp_path):
    server = StreamServer(clips["long"], "udp", tmp_path).start()
    camera = _network_camera(server).start()
    try:
        assert drain(camera, lambda got: len(got) >= 3), server.log_tail()
        server.kill()  # the camera's read now blocks until its stall timeout
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        joined = camera.stop()
        elapsed = time.monotonic() - started
        server.stop()
    assert joined
    assert elapsed < 5
    assert camera.state is SourceState.STOPPED
    assert camera.take(0.5) is None
