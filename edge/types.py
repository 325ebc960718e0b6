"""Plain result types passed between the recognition stages.

They are small, immutable and carry no behaviour beyond derived values, so each
stage (detect -> read -> format rules) is a pure function of the previous one's
output and can be tested without models or threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True, slots=True)
class Detections:
    """Plate boxes found in one image, in that image's pixel coordinates.

    ``xyxy`` is an (N, 4) float32 array of x1, y1, x2, y2; ``scores`` is (N,)
    float32. Rows are sorted by descending score.
    """

    xyxy: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        if self.scores.shape != (self.xyxy.shape[0],):
            raise ValueError(f"scores must be ({self.xyxy.shape[0]},), got {self.scores.shape}")
        self.xyxy.setflags(write=False)
        self.scores.setflags(write=False)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> Detections:
        """The boxes a slice, boolean mask or index list selects, in that order."""
        return Detections(self.xyxy[index], self.scores[index])


@dataclass(frozen=True, slots=True)
class CharChoice:
    """The recogniser's options for one character position, most likely first."""

    chars: tuple[str, ...]
    probs: tuple[float, ...]

    @property
    def best(self) -> str:
        return self.chars[0]

    @property
    def prob(self) -> float:
        return self.probs[0]


@dataclass(frozen=True, slots=True)
class TextCandidate:
    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class OcrResult:
    """What an OCR engine read from one plate crop, before any plate-format rules.

    ``text`` is the raw best reading (may contain spaces, punctuation, lower case);
    ``chars`` holds one :class:`CharChoice` per character of ``text``;
    ``candidates`` are alternative whole readings, best first (``text`` included).
    """

    text: str
    confidence: float
    chars: tuple[CharChoice, ...]
    candidates: tuple[TextCandidate, ...] = ()

    @property
    def char_confidences(self) -> tuple[float, ...]:
        return tuple(c.prob for c in self.chars)


@dataclass(frozen=True, slots=True)
class PlateText:
    """A reading that satisfies a plate format, with the alternatives it beat."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    pattern: str
    candidates: tuple[TextCandidate, ...] = field(default_factory=tuple)
    #: A cross-boundary plate's text with its Chinese characters where they were read
    #: (``粤Z1234港``, see :mod:`edge.crossboundary`); empty for any other plate.
    marked_text: str = ""


@dataclass(frozen=True, slots=True)
class RecognizedPlate:
    """One plate found and read in one image."""

    box: tuple[float, float, float, float]
    detection_score: float
    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    candidates: tuple[TextCandidate, ...]
    #: A cross-boundary vehicle's Guangdong plate's text with its Chinese characters
    #: where they were read (``粤Z1234港``; its ``text`` is then the core, ``Z1234``);
    #: empty for any other plate.
    marked_text: str = ""
    #: Index, among the same image's plates, of the plate of the same vehicle: for a
    #: cross-boundary plate, the Hong Kong plate mounted above it.
    linked_to: int | None = None

    @property
    def kind(self) -> str:
        return "crossboundary" if self.marked_text else "plate"


@dataclass(frozen=True, slots=True)
class Frame:
    """One image from a camera or file, with the times and place it came from.

    ``timestamp`` is the clock tracking runs on, in seconds: the media time for a
    replayed file (so a replay tracks exactly like the recording did), and
    ``captured_mono`` for a live source (a file played as a camera included).
    ``captured_utc`` is wall-clock UTC, for evidence. ``seq`` counts frames the source
    produced (0-based); a gap between two processed frames' ``seq`` is frames dropped.
    ``frame_number`` and ``media_ms`` are set for files only.
    """

    camera: str
    image: np.ndarray
    seq: int
    timestamp: float
    captured_mono: float
    captured_utc: datetime
    frame_number: int | None = None
    media_ms: float | None = None


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One plate pass seen by one camera: the consensus of every frame of its track.

    ``plate`` is the voted text and ``candidates`` the other texts the track's frames
    supported, best first (``plate`` included), so a watchlist can try near-misses.
    ``frames`` counts the frames the plate was detected in, ``readings`` those whose
    OCR met the plate format. ``box`` and ``crop`` (BGR, or None) come from the frame
    with the best reading. ``first_frame``/``last_frame`` are set for files.
    ``last_capture_mono`` and ``emitted_mono`` (``time.monotonic()``) give the latency
    from the capture of the last frame used to the read being emitted.
    ``linked_event_id`` names the other camera's read of the same pass, and
    ``corrects_event_id`` the earlier read of this pass that this one overturns.
    """

    event_id: str
    camera: str
    source: str
    plate: str
    confidence: float
    candidates: tuple[TextCandidate, ...]
    frames: int
    readings: int
    first_seen: datetime
    last_seen: datetime
    first_frame: int | None
    last_frame: int | None
    box: tuple[float, float, float, float]
    crop: np.ndarray | None
    last_capture_mono: float
    emitted_mono: float
    #: The read of the same plate by another camera in the same time window, if any
    #: (a car seen by the front and the rear camera gives two linked reads).
    linked_event_id: str | None = None
    #: The whole frame ``box`` is in, when context images are configured (else None).
    context: np.ndarray | None = None
    #: A cross-boundary plate's text with its Chinese characters (``粤Z1234港``; then
    #: ``plate`` is its core), and the plate of the same vehicle mounted above it when
    #: that was read; empty and None for any other plate.
    marked_plate: str = ""
    vehicle_plate: str | None = None
    #: A correction: the read of the same pass (same camera, same track) that later,
    #: larger views showed to be a misread of this plate; None for a first read.
    corrects_event_id: str | None = None

    @property
    def kind(self) -> str:
        return "crossboundary" if self.marked_plate else "plate"

    @property
    def latency_ms(self) -> float:
        return (self.emitted_mono - self.last_capture_mono) * 1e3


@dataclass(frozen=True, slots=True)
class Position:
    """Where the car was: a GPS fix (WGS 84) and when it was taken (UTC).
    ``heading`` is degrees from true north; None where the receiver gave none."""

    lat: float
    lon: float
    fix_time: datetime
    heading: float | None = None
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class PositionFix:
    """The fix chosen for a moment: ``age_s`` is the distance in seconds between the
    fix and that moment; ``stale`` when it exceeds the configured maximum."""

    position: Position
    age_s: float
    stale: bool
