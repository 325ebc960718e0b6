"""Tracking: follow each plate across one camera's frames and give one read per pass.

A passing plate is detected in many consecutive frames. :class:`PlateTracker` links
each frame's detections to the live tracks (overlap with where the track is expected
to be, falling back to distance for fast or dropped-frame motion), collects the
format-valid readings of each track, and votes them (:mod:`edge.tracking.vote`) into
one :class:`PlateRead`:

* as soon as the vote is decided (the readings agreeing with it outweigh the rest by
  ``decide_margin`` readings' worth of confidence), so a hit does not wait for the
  car to leave the picture;
* otherwise when the track ends (not seen for ``track_timeout_seconds``) or grows
  older than ``max_track_seconds``.

A track whose read is out is read again now and then: when a car changes lanes and
reveals the one ahead in the same place, the detections carry on as one track, and
the new plate must become a pass of its own (:meth:`PlateTracker.add_reading`). When
instead the later, larger views settle on a text one look-alike or one character away
from the read (an early 8/B or 0/D confusion), the read was wrong: a correction goes
out, a new read naming the overturned one in ``corrects_event_id``.

The same plate read again by the same camera within ``dedup_seconds`` is the same
pass and gives no new read. Everything here is plain logic on frame timestamps, with
no threads or clocks of its own, so replaying a file tracks exactly as live did.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from edge import crossboundary
from edge.config import TrackingConfig
from edge.ids import new_event_id
from edge.platetext import distance
from edge.recognition.crop import expand_box
from edge.recognition.detect import box_iou
from edge.recognition.plateformat import PlateFormat
from edge.tracking.calibration import ConfidenceCalibration, evidence_score
from edge.tracking.vote import Consensus, is_decided, vote
from edge.types import Detections, Frame, PlateRead, PlateText

Box = tuple[float, float, float, float]

# Evidence crops keep some of the car around the plate, and are capped in size.
CROP_MARGIN = 0.15
# Fallback match when boxes do not overlap (fast motion, dropped frames): centre
# distance within this many box widths and a size within this ratio.
MAX_JUMP_WIDTHS = 1.5
MAX_SIZE_RATIO = 2.5
# Velocity smoothing: weight of the newest measurement.
VELOCITY_GAIN = 0.5
# Search region around a tracked plate, in plate widths: wide enough for its motion
# until the next frame and for the car around it, which the detector relies on.
REGION_WIDTHS = 3.0
# A plate this share of min_read_width wide is about to be readable (a passing plate
# grows by a few percent a frame).
NEAR_READABLE = 0.75
# A box within this many pixels of the frame's border touches it.
EDGE_PX = 2.0
# A plate cut by the frame's side shows only part of its width; its height still
# tells its size. Plates are 2 to 5 times as wide as tall: a region sized for 3 keeps
# a plate sliding into view (an overtaking car moves ~100 px a frame) inside it.
CUT_PLATE_ASPECT = 3.0
# A read plate is read again every 0.3 s at first, then ever less often (every tenth of
# the time since its read, and at least once a second): its plate may change at any
# time, but a parked car must not cost an OCR pass every few frames for minutes. 0.3
# rather than the follow interval (0.15): less OCR (60 s replay 0.10 -> 0.08 crops
# a frame), and a changed plate is read every frame from its first recheck anyway.
RECHECK_MIN_SECONDS = 0.3
RECHECK_SHARE = 0.1
RECHECK_MAX_SECONDS = 1.0
# The latest readings after the read that judge whether the plate changed.
RECHECK_WINDOW = 6
# Texts this far apart (look-alikes count half, see edge.platetext.distance) are two
# plates; closer ones are misreads of one (ZS27 read Z527 as the plate recedes).
NEW_PLATE_DISTANCE = 2.0
# Corrections. A reading after the read counts as evidence against it only from a plate
# at least this share as wide as when the read went out: an approaching plate grows and
# reads better, a receding one shrinks and reads worse (its look-alikes must not
# overturn what its larger views read).
CORRECTION_MIN_WIDTH_SHARE = 0.9
# The lead a correction needs when early reads are off (decide_margin 0): about two sure
# readings, the default decide_margin. A single reading (confidence at most 1) never
# reaches it.
CORRECTION_MIN_MARGIN = 1.9
# Corrections per track at most (each to a text the track never gave): a plate that
# keeps reading two ways must not flip its read back and forth.
MAX_CORRECTIONS = 2


@dataclass(slots=True)
class _Sighting:
    """Where and when a track was seen, for the read's times and frame numbers."""

    timestamp: float
    utc: datetime
    capture_mono: float
    frame_number: int | None


@dataclass(frozen=True, slots=True)
class _Recheck:
    """A reading of a track after its read: what, when, and how wide the plate was."""

    reading: PlateText
    sighting: _Sighting
    width: float


@dataclass(slots=True)
class Track:
    """A plate followed across frames of one camera."""

    track_id: int
    box: np.ndarray
    first: _Sighting
    last: _Sighting
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float64))
    frames: int = 1
    readings: list[PlateText] = field(default_factory=list)
    #: Score, box and crop of the best reading so far (evidence for the read).
    best_score: float = -1.0
    best_box: Box | None = None
    best_crop: np.ndarray | None = None
    #: The whole frame of the best reading, kept only for context images.
    best_frame: np.ndarray | None = None
    emitted: str | None = None
    #: Timestamp of the first reading (None until the plate was read).
    first_read: float | None = None
    #: The vote over ``readings``, kept until a reading is added.
    consensus: Consensus | None = None
    #: When the read went out, and when the plate was last read (then: read again).
    emitted_at: float | None = None
    checked: float | None = None
    #: The latest readings since the read, each with the sighting it was read in.
    rechecks: list[_Recheck] = field(default_factory=list)
    #: The event id of the read that stands for this pass (the first read, then each
    #: correction); None before the read, or when it was a duplicate (nothing went out).
    standing_event_id: str | None = None
    #: Every text this track gave (its read, then its corrections): never given again.
    texts_given: list[str] = field(default_factory=list)
    #: The plate's width when the standing read went out (see CORRECTION_MIN_WIDTH_SHARE).
    read_width: float = 0.0
    #: Summed confidence per text of the readings since the read that count as evidence
    #: (wide enough), and how many readings there were in all since the read.
    support_since_read: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    readings_since_read: int = 0
    #: A correction decided on a reading, emitted at the next :meth:`PlateTracker.collect`.
    pending_correction: Consensus | None = None

    def predicted(self, timestamp: float) -> np.ndarray:
        """Where the box should be at ``timestamp``, moving at the track's velocity."""
        dt = max(0.0, timestamp - self.last.timestamp)
        shift = self.velocity * dt
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]])

    @property
    def decided(self) -> bool:
        return self.emitted is not None

    @property
    def in_doubt(self) -> bool:
        """Read, but its latest reading is another plate, or another text of the read
        plate that could correct it: read it every frame until the readings settle it
        (a wrong read may have raised a hit; its correction must not wait)."""
        if self.emitted is None or not self.rechecks:
            return False
        latest = self.rechecks[-1]
        if distance(latest.reading.text, self.emitted) >= NEW_PLATE_DISTANCE:
            return True
        return latest.reading.text != self.emitted and self.could_correct_to(latest)

    def counts_as_evidence(self, recheck: _Recheck) -> bool:
        """Whether a reading since the read may weigh against it: seen at least about
        as large as when the read went out."""
        return recheck.width >= CORRECTION_MIN_WIDTH_SHARE * self.read_width

    def could_correct_to(self, recheck: _Recheck) -> bool:
        """Whether ``recheck``'s text may still become a correction of this track."""
        return (
            len(self.texts_given) <= MAX_CORRECTIONS
            and recheck.reading.text not in self.texts_given
            and self.counts_as_evidence(recheck)
        )

    def support(self, text: str) -> float:
        """Summed confidence of this track's readings of ``text``: those that made the
        read, and those since that count as evidence."""
        before = sum(r.confidence for r in self.readings if r.text == text)
        return before + self.support_since_read.get(text, 0.0)


class PlateTracker:
    """Tracks and reads for one camera. Feed every processed frame, in order:

    ``tracks = tracker.associate(frame, detections)`` gives the track of each
    detection; read the detections whose track ``wants_reading``; pass the readings
    to ``tracker.add_readings``; ``tracker.collect(frame.timestamp)`` then returns the
    reads that became due. ``tracker.collect(final=True)`` ends every track (end of a
    file, shutdown).
    """

    def __init__(
        self,
        camera: str,
        source: str,
        config: TrackingConfig,
        plate_format: PlateFormat | None = None,
        *,
        clock=time.monotonic,
        keep_context: bool = False,
        calibration: ConfidenceCalibration | None = None,
    ):
        self.camera = camera
        #: Evidence score -> share of reads right (identity: the score as it is).
        self.calibration = calibration or ConfidenceCalibration.identity()
        #: Tracks that ended with a read short of ``min_read_confidence``: nothing went out.
        self.withheld = 0
        # Keep the best reading's whole frame (for a blurred context image of a hit):
        # a reference, not a copy, and only while the track lives.
        self.keep_context = keep_context
        self.source = source
        self.config = config
        self.plate_format = plate_format
        self._clock = clock
        self._tracks: list[Track] = []
        self._ids = itertools.count(1)
        # plate -> when (UTC) it was last seen by a track that gave its read. Wall-clock,
        # not frame timestamps, so the window spans consecutive recordings of one camera.
        self._recent: dict[str, datetime] = {}
        self._latest_utc: datetime | None = None
        self._frame_hw: tuple[int, int] | None = None
        self.duplicates = 0

    @property
    def live_tracks(self) -> int:
        return len(self._tracks)

    def search_regions(self, timestamp: float, frame_hw: tuple[int, int]) -> list[tuple[int, ...]]:
        """Where the live tracks' plates should be at ``timestamp``: a square of
        ``REGION_WIDTHS`` plate widths around each predicted box, clipped to the frame,
        for each track due a search (:meth:`_follow_due`)."""
        h, w = frame_hw
        regions = []
        for track in self._tracks:
            if timestamp - track.last.timestamp > self._timeout:
                continue
            if not self._follow_due(track, timestamp, frame_hw):
                continue
            x1, y1, x2, y2 = track.predicted(timestamp)
            size = max(x2 - x1, y2 - y1)
            if _cut_at_side(track.box, w):
                size = max(size, CUT_PLATE_ASPECT * (y2 - y1))
            half = size * REGION_WIDTHS / 2
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            region = (
                max(0, int(cx - half)),
                max(0, int(cy - half)),
                min(w, int(cx + half) + 1),
                min(h, int(cy + half) + 1),
            )
            if region[2] > region[0] and region[3] > region[1]:
                regions.append(region)
        return regions

    def _follow_due(self, track: Track, timestamp: float, frame_hw: tuple[int, int]) -> bool:
        """Whether to search around ``track`` in this frame. Most of a pass is spent
        before a plate is readable or after its read is out; searching then only keeps
        the track alive, which a search every follow interval does at a fraction of
        the cost. A track at the border is searched every frame: a miss there ends it
        (:meth:`_left_view`), and a car leaving the picture must not start a new pass."""
        interval = self.config.follow_interval_seconds
        if interval <= 0 or timestamp - track.last.timestamp >= interval * 0.95:
            return True
        h, w = frame_hw
        x1, y1, x2, y2 = track.box
        if x1 <= EDGE_PX or y1 <= EDGE_PX or x2 >= w - EDGE_PX or y2 >= h - EDGE_PX:
            return True
        # Followed closely a little before it is wide enough to read, so its first
        # readable frame is not missed by up to a follow interval.
        soon_readable = x2 - x1 >= NEAR_READABLE * self.config.min_read_width
        return (not track.decided or track.in_doubt) and soon_readable

    def associate(self, frame: Frame, detections: Detections) -> list[Track]:
        """Link each detection to a live track or start a new one; same order as
        ``detections``."""
        t = frame.timestamp
        self._frame_hw = frame.image.shape[:2]
        if self._latest_utc is None or frame.captured_utc > self._latest_utc:
            self._latest_utc = frame.captured_utc
        sighting = _Sighting(t, frame.captured_utc, frame.captured_mono, frame.frame_number)
        assigned: list[Track | None] = [None] * len(detections)
        live = [tr for tr in self._tracks if t - tr.last.timestamp <= self._timeout]
        frame_w = frame.image.shape[1]
        pairs = []
        for ti, track in enumerate(live):
            predicted = track.predicted(t)
            cut = _cut_at_side(track.box, frame_w)
            overlaps = box_iou(predicted, detections.xyxy) if len(detections) else []
            for di, overlap in enumerate(overlaps):
                cost = _match_cost(
                    predicted, detections.xyxy[di], float(overlap), self.config, cut=cut
                )
                if cost is not None:
                    pairs.append((cost, ti, di))
        used_tracks: set[int] = set()
        for _cost, ti, di in sorted(pairs):
            if ti in used_tracks or assigned[di] is not None:
                continue
            used_tracks.add(ti)
            track = live[ti]
            self._move(track, detections.xyxy[di].astype(np.float64), sighting)
            assigned[di] = track
        for di, track in enumerate(assigned):
            if track is None:
                track = Track(
                    next(self._ids),
                    detections.xyxy[di].astype(np.float64),
                    first=sighting,
                    last=sighting,
                )
                self._tracks.append(track)
                assigned[di] = track
        return assigned  # type: ignore[return-value]

    def wants_reading(self, track: Track, timestamp: float) -> bool:
        """Whether OCR on this track's box is useful at ``timestamp``: every frame until
        its read is out, then only a recheck now and then (every frame while the
        latest one saw another plate)."""
        if not track.decided or track.in_doubt:
            return True
        assert track.emitted_at is not None and track.checked is not None
        since_read = timestamp - track.emitted_at
        interval = min(RECHECK_MAX_SECONDS, max(RECHECK_MIN_SECONDS, RECHECK_SHARE * since_read))
        return timestamp - track.checked >= interval * 0.95

    def add_reading(
        self, track: Track, frame: Frame, box: np.ndarray, reading: PlateText | None, score: float
    ) -> None:
        """Record one frame's reading of ``track`` (None: read, but not as a plate).

        After the track's read is out, a reading is a recheck: when the latest ones
        settle on another plate as surely as an early read (:meth:`_is_decided`, the
        readings of the read plate counting against it), that plate continues as a new
        track from its first reading, and the old one ends. When they settle instead on
        another text of the same plate, the read is corrected (:meth:`_correction`)."""
        if track.decided:
            track.checked = frame.timestamp
            if reading is None:
                return
            recheck = _Recheck(reading, track.last, float(box[2] - box[0]))
            track.rechecks.append(recheck)
            del track.rechecks[:-RECHECK_WINDOW]
            track.readings_since_read += 1
            if track.counts_as_evidence(recheck):
                track.support_since_read[reading.text] += reading.confidence
            successor = self._changed_plate(track)
            if successor is not None:
                self._keep_best(successor, frame, box, reading, score)
                self._tracks[self._tracks.index(track)] = successor
                return
            correction = self._correction(track, recheck)
            if correction is not None:
                # The view that settled it is the correction's evidence (the earlier
                # best view shows the plate as first read).
                track.pending_correction = correction
                track.best_score = -1.0
                self._keep_best(track, frame, box, reading, score)
            return
        if reading is None:
            return
        if track.first_read is None:
            track.first_read = frame.timestamp
        track.readings.append(reading)
        track.consensus = None
        self._keep_best(track, frame, box, reading, score)

    def _keep_best(
        self, track: Track, frame: Frame, box: np.ndarray, reading: PlateText, score: float
    ) -> None:
        # The clearest, largest view is the best evidence.
        quality = reading.confidence * float(box[2] - box[0]) * max(score, 0.05)
        if quality > track.best_score:
            track.best_score = quality
            track.best_box = tuple(float(v) for v in box)
            x1, y1, x2, y2 = expand_box(box, frame.image.shape, CROP_MARGIN, CROP_MARGIN)
            track.best_crop = frame.image[y1:y2, x1:x2].copy()
            if self.keep_context:
                track.best_frame = frame.image

    def _changed_plate(self, track: Track) -> Track | None:
        """The track of another plate the rechecks of read ``track`` settled on, from
        that plate's first reading; None while they do not."""
        assert track.emitted is not None
        consensus = vote([c.reading for c in track.rechecks], self.plate_format)
        if (
            consensus is None
            or distance(consensus.text, track.emitted) < NEW_PLATE_DISTANCE
            or partial_view(consensus.text, track.emitted)
            or not self._is_decided(consensus)
        ):
            return None
        new_plate = [
            c
            for c in track.rechecks
            if distance(c.reading.text, track.emitted) >= NEW_PLATE_DISTANCE
        ]
        first = new_plate[0].sighting
        return Track(
            next(self._ids),
            track.box.copy(),
            first=first,
            last=track.last,
            velocity=track.velocity.copy(),
            frames=len(new_plate),
            readings=[c.reading for c in new_plate],
            first_read=first.timestamp,
        )

    def _correction(self, track: Track, latest: _Recheck) -> Consensus | None:
        """The vote that overturns ``track``'s read, decided on its ``latest`` reading;
        None while the evidence does not. A correction needs all of:

        * the latest reading's text is one the track may still correct to (not a text
          it gave before, corrections left, the plate as large as when it was read);
        * the latest readings that count as evidence vote for that text, closer than
          ``NEW_PLATE_DISTANCE`` to the read (farther is another plate: a new pass),
          and the vote is decided as an early read is (:func:`is_decided`: a margin
          over the other readings of the window, every character well supported);
        * over the whole track (the readings that made the read, and those since), the
          text's readings outweigh the read text's by the same margin: the correction
          is better supported than the read was, so a single contrary reading, or a
          few against many, change nothing.
        """
        assert track.emitted is not None
        text = latest.reading.text
        if text == track.emitted or not track.could_correct_to(latest):
            return None
        window = [c.reading for c in track.rechecks if track.counts_as_evidence(c)]
        consensus = vote(window, self.plate_format)
        if (
            consensus is None
            or consensus.text != text
            or distance(text, track.emitted) >= NEW_PLATE_DISTANCE
        ):
            return None
        margin = max(self.config.decide_margin, CORRECTION_MIN_MARGIN)
        if not is_decided(consensus, margin):
            return None
        if track.support(text) - track.support(track.emitted) < margin:
            return None
        return consensus

    def collect(
        self, now: float | None = None, *, final: bool = False, after_frame: bool = False
    ) -> list[PlateRead]:
        """Reads due at ``now`` (a timestamp on the frames' clock); ended tracks are
        dropped. ``after_frame``: ``now`` is the frame just associated, so a track it
        did not contain was missed (a plate at the border has then left the picture)."""
        reads: list[PlateRead] = []
        keep: list[Track] = []
        for track in self._tracks:
            ended = final or (
                now is not None
                and (
                    now - track.last.timestamp > self._timeout
                    or (after_frame and self._left_view(track, now))
                )
            )
            # Age counts from the first reading: a plate tracked while still too small
            # to read must not be read from its two most distant views.
            aged = (
                now is not None
                and track.first_read is not None
                and now - track.first_read >= self.config.max_track_seconds
            )
            if not track.decided:
                if track.consensus is None and track.readings:
                    track.consensus = vote(track.readings, self.plate_format)
                consensus = track.consensus
                due = ended or aged or self._is_decided(consensus)
                if consensus is not None and due and len(track.readings) >= self.config.min_reads:
                    if self._sure(consensus):
                        read = self._emit(track, consensus)
                        if read is not None:
                            reads.append(read)
                    elif ended:
                        # Unsure to the end: no read rather than a likely wrong one.
                        self.withheld += 1
                    # (else: still in view, unsure: read on; a later view may settle it)
            else:
                if track.pending_correction is not None:
                    read = self._emit_correction(track)
                    if read is not None:
                        reads.append(read)
                # Still in view after its read: the dedup window runs from the last
                # sighting (of the corrected text, after a correction: this pass's).
                self._recent[track.emitted] = max(
                    self._recent.get(track.emitted, track.last.utc), track.last.utc
                )
            if not ended:
                keep.append(track)
        self._tracks = keep
        if self._latest_utc is not None:
            horizon = self._latest_utc - timedelta(seconds=self.config.dedup_seconds)
            self._recent = {p: t for p, t in self._recent.items() if t >= horizon}
        return reads

    def restart(self, source: str) -> None:
        """The same camera's next recording: tracks start afresh (their frame clock
        restarts), the dedup window carries on, so a car crossing from one dashcam
        segment into the next is still one pass."""
        self._tracks = []
        self._frame_hw = None
        self.source = source

    # --- internals ---------------------------------------------------------------

    @property
    def _timeout(self) -> float:
        return self.config.track_timeout_seconds

    def _is_decided(self, consensus: Consensus | None) -> bool:
        return is_decided(consensus, self.config.decide_margin)

    def confidence(self, consensus: Consensus) -> float:
        """The calibrated confidence a read of ``consensus`` goes out with."""
        return self.calibration(
            evidence_score(consensus.text, consensus.confidence, consensus.candidates)
        )

    def _sure(self, consensus: Consensus) -> bool:
        return self.confidence(consensus) >= self.config.min_read_confidence

    def _left_view(self, track: Track, now: float) -> bool:
        """Missed in the latest frame while at the frame's border and moving out: the
        car has left the picture, so there is no point waiting for the timeout."""
        if now <= track.last.timestamp or self._frame_hw is None:
            return False
        h, w = self._frame_hw
        x1, y1, x2, y2 = track.box
        vx, vy = track.velocity
        return bool(
            (x1 <= EDGE_PX and vx < 0)
            or (x2 >= w - EDGE_PX and vx > 0)
            or (y1 <= EDGE_PX and vy < 0)
            or (y2 >= h - EDGE_PX and vy > 0)
        )

    def _move(self, track: Track, box: np.ndarray, sighting: _Sighting) -> None:
        dt = sighting.timestamp - track.last.timestamp
        if dt > 0:
            centre = (box[:2] + box[2:]) / 2
            previous = (track.box[:2] + track.box[2:]) / 2
            measured = (centre - previous) / dt
            track.velocity = VELOCITY_GAIN * measured + (1 - VELOCITY_GAIN) * track.velocity
        track.box = box
        track.last = sighting
        track.frames += 1

    def _emit(self, track: Track, consensus: Consensus) -> PlateRead | None:
        track.emitted = consensus.text
        track.texts_given.append(consensus.text)
        track.emitted_at = track.checked = track.last.timestamp
        track.read_width = float(track.box[2] - track.box[0])
        if self._duplicate(track, consensus.text):
            return None
        read = self._read(track, consensus, track.readings)
        track.standing_event_id = read.event_id
        return read

    def _emit_correction(self, track: Track) -> PlateRead | None:
        """The pending correction of ``track`` as a read naming the read it overturns.
        A track whose read was a duplicate sent nothing to correct: its corrected text
        is then a read like any other (unless it is a duplicate too)."""
        consensus = track.pending_correction
        assert consensus is not None
        track.pending_correction = None
        overturned = track.standing_event_id
        track.emitted = consensus.text
        track.texts_given.append(consensus.text)
        track.read_width = float(track.box[2] - track.box[0])
        if overturned is None:
            if self._duplicate(track, consensus.text):
                return None
        else:
            self._recent[consensus.text] = track.last.utc
        readings = [c.reading for c in track.rechecks if c.reading.text == consensus.text]
        read = self._read(track, consensus, readings, corrects=overturned)
        track.standing_event_id = read.event_id
        return read

    def _duplicate(self, track: Track, text: str) -> bool:
        """Whether ``text`` was last seen within the dedup window before ``track``
        began (then it is the same pass: counted, not read again); marks it seen."""
        seen = self._recent.get(text)
        self._recent[text] = track.last.utc
        if (
            seen is not None
            and (track.first.utc - seen).total_seconds() <= self.config.dedup_seconds
        ):
            self.duplicates += 1
            return True
        return False

    def _read(
        self,
        track: Track,
        consensus: Consensus,
        readings: Sequence[PlateText],
        *,
        corrects: str | None = None,
    ) -> PlateRead:
        return PlateRead(
            event_id=new_event_id(),
            camera=self.camera,
            source=self.source,
            plate=consensus.text,
            confidence=self.confidence(consensus),
            candidates=consensus.candidates,
            frames=track.frames,
            readings=len(track.readings) + track.readings_since_read,
            first_seen=track.first.utc,
            last_seen=track.last.utc,
            first_frame=track.first.frame_number,
            last_frame=track.last.frame_number,
            box=track.best_box or tuple(float(v) for v in track.box),
            crop=track.best_crop,
            context=track.best_frame,
            last_capture_mono=track.last.capture_mono,
            emitted_mono=self._clock(),
            corrects_event_id=corrects,
            **self._cross_boundary(track, consensus.text, readings),
        )

    def _cross_boundary(self, track: Track, plate: str, readings: Sequence[PlateText]) -> dict:
        """A cross-boundary plate's marked text, the one most of its ``readings`` of
        the voted core gave (a frame that missed a mark gives a shorter one), and the
        plate of the track mounted above it (its vehicle's), when that one has a plate."""
        marked = Counter(r.marked_text for r in readings if r.text == plate and r.marked_text)
        if not marked:
            return {}
        best = max(marked.items(), key=lambda item: (item[1], len(item[0])))[0]
        above = [
            (i, tuple(float(v) for v in other.box))
            for i, other in enumerate(self._tracks)
            if other is not track and self._plate_of(other) is not None
        ]
        found = crossboundary.stacked_above(tuple(float(v) for v in track.box), above)
        vehicle = None if found is None else self._plate_of(self._tracks[found])
        return {"marked_plate": best, "vehicle_plate": vehicle}

    def _plate_of(self, track: Track) -> str | None:
        """The plate a track gave or, before that, its vote so far."""
        if track.emitted is not None:
            return track.emitted
        if track.consensus is None and track.readings:
            track.consensus = vote(track.readings, self.plate_format)
        return None if track.consensus is None else track.consensus.text


class PassLinker:
    """Links reads of the same plate by different cameras within ``window_seconds``:
    the later read names the earlier one's ``event_id``. Times are wall-clock
    (``first_seen``/``last_seen``), the clock both cameras share."""

    def __init__(self, window_seconds: float):
        self.window_seconds = window_seconds
        # (plate, camera) -> that camera's latest read of the plate
        self._latest: dict[tuple[str, str], PlateRead] = {}

    def link(self, read: PlateRead) -> PlateRead:
        others = [
            r
            for (plate, camera), r in self._latest.items()
            if plate == read.plate and camera != read.camera
        ]
        self._latest[(read.plate, read.camera)] = read
        if not others:
            return read
        other = max(others, key=lambda r: r.last_seen)
        if (read.first_seen - other.last_seen).total_seconds() > self.window_seconds:
            return read
        return dataclasses.replace(read, linked_event_id=other.event_id)

    def forget_before(self, moment: datetime) -> None:
        """Drop reads that can no longer be linked (last seen before ``moment``)."""
        self._latest = {k: r for k, r in self._latest.items() if r.last_seen >= moment}


def partial_view(text: str, read: str) -> bool:
    """Whether ``text`` is the read plate seen in part (a box that caught only some of
    its characters: "HEYDU" of HEYDUDE) or with stray marks beside it (the plate's
    frame read as L or 1): the same plate, never another car's. (On clips made from
    real HK photos a read plate's own characters were taken for a new plate.)"""
    return bool(text) and (text in read or read in text)


def _cut_at_side(box: np.ndarray, frame_width: int) -> bool:
    """Whether the frame's left or right side cuts ``box`` (its width is then partial)."""
    return bool(box[0] <= EDGE_PX or box[2] >= frame_width - EDGE_PX)


def _match_cost(
    predicted: np.ndarray,
    box: np.ndarray,
    overlap: float,
    config: TrackingConfig,
    *,
    cut: bool = False,
) -> float | None:
    """Lower is better; None when the detection cannot be this track. ``cut``: the
    track's box is cut by the frame's side, so its height gives its size (a plate
    sliding into view grows several times over in width from one frame to the next)."""
    if overlap >= config.iou_threshold:
        return 1.0 - overlap
    width = max(1.0, float(predicted[2] - predicted[0]))
    height = max(1.0, float(predicted[3] - predicted[1]))
    if cut:
        width = max(width, CUT_PLATE_ASPECT * height)
        other = max(1.0, float(box[3] - box[1]))
        ratio = max(height / other, other / height)
    else:
        other = max(1.0, float((box[2] - box[0]) * (box[3] - box[1])))
        ratio = max(width * height / other, other / (width * height))
    centre_a = (predicted[:2] + predicted[2:]) / 2
    centre_b = (box[:2] + box[2:]) / 2
    jump = float(np.hypot(*(centre_a - centre_b))) / width
    if jump > MAX_JUMP_WIDTHS or ratio > MAX_SIZE_RATIO:
        return None
    # Ranked after every overlapping pair.
    return 1.0 + jump
