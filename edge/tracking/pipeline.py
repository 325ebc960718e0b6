"""The per-frame pipeline: detect -> track -> read -> vote, for any number of cameras.

:class:`FramePipeline` owns no threads: give it frames in order, per camera, and it
returns the reads that became due. Both cameras share its one detector and OCR
session (one model in memory, one onnxruntime thread pool). Replay calls it directly
from the file loop; the live service calls it from its processing thread.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from edge.config import Config, ConfigError, TrackingConfig
from edge.recognition.recognize import PlateRecognizer
from edge.tracking.calibration import ConfidenceCalibration
from edge.tracking.track import EDGE_PX, PassLinker, PlateTracker
from edge.types import Detections, Frame, PlateRead

# Latencies kept for the percentiles: the last few minutes of reads at most.
LATENCY_WINDOW = 4096


@dataclass(slots=True)
class StageTimes:
    """Time spent per stage, summed over processed frames (milliseconds).

    ``busy_ms`` is the whole of :meth:`FramePipeline.process`; it splits into
    ``detect_ms`` + ``ocr_ms`` + ``track_ms``. ``detect_ms`` in turn holds the
    detector's ``preprocess_ms`` (resize/letterbox), ``infer_ms`` (onnxruntime) and
    ``postprocess_ms`` (output decoding, NMS), the rest being search planning and
    Python glue (:attr:`detect_other_ms`).
    """

    frames: int = 0
    detect_ms: float = 0.0
    ocr_ms: float = 0.0
    #: Association, vote bookkeeping, ending tracks and linking/deduplicating reads.
    track_ms: float = 0.0
    ocr_crops: int = 0
    #: Frames searched whole, searched only around live tracks, and not searched
    #: (no live track and no whole-frame search due).
    scans: int = 0
    region_searches: int = 0
    unsearched: int = 0
    busy_ms: float = 0.0
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0
    #: Detector network runs (one per whole-frame search or search region).
    detector_runs: int = 0

    @property
    def detect_other_ms(self) -> float:
        return max(0.0, self.detect_ms - self.preprocess_ms - self.infer_ms - self.postprocess_ms)

    def add(self, other: StageTimes) -> StageTimes:
        """A new StageTimes holding the sums of this one's and ``other``'s fields."""
        out = StageTimes()
        for name in StageTimes.__slots__:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out


def percentile(values, q: float) -> float | None:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else None


def latency_summary(latencies_ms) -> dict[str, float | None]:
    """``{"p50": ms, "p95": ms}`` rounded to 0.1 ms (None when there is no read): the
    form `run`'s stats line and `replay`'s summary report it in."""
    out = {}
    for name, q in (("p50", 50), ("p95", 95)):
        value = percentile(latencies_ms, q)
        out[name] = None if value is None else round(value, 1)
    return out


class ScanSchedule:
    """When each camera's whole frame is searched for new plates: every ``interval``
    seconds of its clock (every frame when 0), its first frame at once.

    The cameras share the cores, and a whole-frame search costs several times a
    frame's other work: two in the same round hold up both cameras for a few frame
    periods, and their capture threads drop the frames that come meanwhile. So a scan
    due just after another camera's (within ``interval`` / 2n for n cameras) waits, at
    most half an interval, and the cameras' scans settle evenly spread over the
    interval. Cameras on unrelated clocks (replayed files) never wait for each other
    for long: the wait is capped.
    """

    def __init__(self, interval: float):
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, camera: str, timestamp: float) -> bool:
        """Whether ``camera``'s frame at ``timestamp`` is searched whole; a yes counts
        as the search done."""
        last = self._last.get(camera)
        if self.interval > 0 and last is not None:
            waited = timestamp - last
            # A little slack so a 30 fps camera with a 0.1 s interval scans every 3rd frame.
            if waited < self.interval * 0.95:
                return False
            if waited < self.interval * 1.5 and self._just_after_another(camera, timestamp):
                return False
        self._last[camera] = timestamp
        return True

    def forget(self, camera: str) -> None:
        """``camera`` starts over (a new recording): its next frame is searched whole."""
        self._last.pop(camera, None)

    def _just_after_another(self, camera: str, timestamp: float) -> bool:
        spacing = self.interval / (2 * max(1, len(self._last)))
        return any(
            other != camera and 0.0 <= timestamp - at < spacing for other, at in self._last.items()
        )


def load_calibration(config: Config) -> ConfidenceCalibration:
    """The confidence calibration ``config`` names (``[tracking]
    confidence_calibration``), or the shipped one; ConfigError naming the key when
    the file cannot be used."""
    path = config.tracking.confidence_calibration
    try:
        return ConfidenceCalibration.load(config.resolve_path(path) if path else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"'tracking.confidence_calibration' {path}: {exc}"]) from None


class FramePipeline:
    """Shared recognition core plus one :class:`PlateTracker` per camera."""

    def __init__(
        self,
        recognizer: PlateRecognizer,
        tracking: TrackingConfig,
        *,
        keep_context: bool = False,
        calibration: ConfidenceCalibration | None = None,
    ):
        """``calibration``: the reads' confidence calibration (:func:`load_calibration`
        gives the one a configuration names); None is the shipped table."""
        self.recognizer = recognizer
        self.calibration = calibration or ConfidenceCalibration.load()
        self.keep_context = keep_context
        self.tracking = tracking
        self._trackers: dict[str, PlateTracker] = {}
        self.times: dict[str, StageTimes] = {}
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._scans = ScanSchedule(tracking.scan_interval_seconds)
        self._linker = PassLinker(tracking.dedup_seconds)
        self.reads = 0

    @property
    def withheld(self) -> int:
        """Tracks that ended unsure (short of ``tracking.min_read_confidence``): no read."""
        return sum(t.withheld for t in self._trackers.values())

    def add_camera(self, name: str, source: str) -> None:
        """Start ``name`` on ``source``; for a camera already known (its next recording),
        call :meth:`finish` first: its dedup window carries over."""
        if name in self._trackers:
            self._trackers[name].restart(source)
        else:
            self._trackers[name] = PlateTracker(
                name,
                source,
                self.tracking,
                self.recognizer.plate_format,
                keep_context=self.keep_context,
                calibration=self.calibration,
            )
            self.times[name] = StageTimes()
        self._scans.forget(name)

    def process(self, frame: Frame) -> list[PlateRead]:
        """Run one frame through every stage; the reads it completed, if any."""
        tracker = self._trackers[frame.camera]
        times = self.times[frame.camera]
        # The detector is shared by the cameras: this frame's share of its sub-stage
        # times is the change over this call.
        detector_times = getattr(self.recognizer.detector, "times", None)
        before = detector_times.snapshot() if detector_times is not None else None
        start = time.perf_counter()
        detections = self._detect(frame, tracker, times)
        detected = time.perf_counter()
        if before is not None:
            runs, pre, infer, post = detector_times.snapshot()
            times.detector_runs += runs - before[0]
            times.preprocess_ms += (pre - before[1]) * 1e3
            times.infer_ms += (infer - before[2]) * 1e3
            times.postprocess_ms += (post - before[3]) * 1e3
        tracks = tracker.associate(frame, detections)
        # Only tracks whose read is not yet decided (or due a recheck) are worth an OCR
        # pass, and only plates big enough and wholly in the picture: a distant plate,
        # or one cut by the frame's edge, reads as a shorter plausible plate ("G69" as
        # "69").
        h, w = frame.image.shape[:2]
        xyxy = detections.xyxy
        readable = (
            (xyxy[:, 2] - xyxy[:, 0] >= self.tracking.min_read_width)
            & (xyxy[:, 0] > EDGE_PX)
            & (xyxy[:, 1] > EDGE_PX)
            & (xyxy[:, 2] < w - EDGE_PX)
            & (xyxy[:, 3] < h - EDGE_PX)
        )
        todo = [
            i
            for i, track in enumerate(tracks)
            if readable[i] and tracker.wants_reading(track, frame.timestamp)
        ]
        associated = time.perf_counter()
        if todo:
            boxes = detections.xyxy[todo]
            texts = self.recognizer.read_boxes(frame.image, boxes)
            for i, text in zip(todo, texts, strict=True):
                tracker.add_reading(
                    tracks[i], frame, detections.xyxy[i], text, float(detections.scores[i])
                )
        read = time.perf_counter()
        emitted = self._emitted(tracker.collect(frame.timestamp, after_frame=True))
        done = time.perf_counter()
        times.frames += 1
        times.busy_ms += (done - start) * 1e3
        times.detect_ms += (detected - start) * 1e3
        times.ocr_ms += (read - associated) * 1e3
        times.track_ms += ((associated - detected) + (done - read)) * 1e3
        times.ocr_crops += len(todo)
        return emitted

    def _detect(self, frame: Frame, tracker: PlateTracker, times: StageTimes) -> Detections:
        """The whole frame when a scan is due, else only around the live tracks."""
        if self._scans.due(frame.camera, frame.timestamp):
            times.scans += 1
            # The whole frame as one region, at the video scan size.
            h, w = frame.image.shape[:2]
            return self.recognizer.detector.detect_regions(
                frame.image, [(0, 0, w, h)], self.tracking.scan_input
            )
        regions = tracker.search_regions(frame.timestamp, frame.image.shape[:2])
        if not regions:
            times.unsearched += 1
            return Detections.empty()
        times.region_searches += 1
        return self.recognizer.detector.detect_regions(
            frame.image, regions, self.tracking.region_input
        )

    def tick(self, camera: str, now: float) -> list[PlateRead]:
        """Reads whose tracks ended by ``now`` on ``camera``'s clock, when no frame came
        (a stalled camera must still deliver the plate it last saw)."""
        return self._emitted(self._trackers[camera].collect(now))

    def finish(self, camera: str | None = None) -> list[PlateRead]:
        """End every track (of one camera, or all): end of a file, or shutdown."""
        names = [camera] if camera else list(self._trackers)
        reads = []
        for name in names:
            reads += self._trackers[name].collect(final=True)
        return self._emitted(reads)

    def duplicates(self, camera: str) -> int:
        return self._trackers[camera].duplicates

    def _emitted(self, reads: list[PlateRead]) -> list[PlateRead]:
        linked = []
        for read in reads:
            self.latencies_ms.append(read.latency_ms)
            linked.append(self._linker.link(read))
            self._linker.forget_before(
                read.last_seen - timedelta(seconds=self.tracking.dedup_seconds)
            )
        self.reads += len(reads)
        return linked
