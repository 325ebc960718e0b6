"""What a generated dashcam clip is and what is in it: :class:`ClipSpec`, its
parameters (the same spec always gives the same truth and the same pixels, before the
codec), and its ground truth (:class:`ClipTruth`, one :class:`PassTruth` per car:
the plate, its style and its box in every frame), which tests, the demo and the
benchmarks read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from edge.synth.hkplates import (
    MAX_MARK,
)

Kind = Literal["approach", "overtake", "follow", "cross"]
KINDS: tuple[Kind, ...] = ("approach", "overtake", "follow", "cross")
CODECS = {"mp4v": ".mp4", "MJPG": ".avi", "FFV1": ".mkv"}
TRUTH_VERSION = 1

# A plate this many pixels wide (and wholly inside the frame) counts as legible: the
# height of its characters is then about 9 px, roughly the smallest the OCR reads.
LEGIBLE_PX = 60.0

# The plates a car can carry (PassTruth.style): a one-row plate, white ("front") or
# yellow ("rear"); a two-row yellow rear plate; or a one-row plate of either colour
# with a cross-boundary vehicle's black Guangdong plate hung under it.
PlateStyle = Literal["front", "rear", "two-row", "crossboundary"]
PLATE_STYLES: tuple[PlateStyle, ...] = ("front", "rear", "two-row", "crossboundary")

# What a Hong Kong plate can show: letters (never I, O or Q) and digits, up to 8.
HK_MARK = re.compile(rf"[A-HJ-NPR-Z0-9]{{1,{MAX_MARK}}}")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ClipSpec:
    """What to generate. Give ``passes`` or ``plates`` (texts, which fixes the count),
    ``seconds``, or both; with only ``seconds`` as many passes as fit are made, with
    only a count the clip is as long as they need.

    Plates: ``style`` "mixed" draws each car's plates from the street mix (one-row
    white front and yellow rear plates, two-row yellow rear plates, now and then a
    cross-boundary vehicle: see :data:`~edge.synth.clipplan.STREET_MIX`); "front",
    "rear", "two-row" or "crossboundary" gives every car that. Generated marks are
    standard ("KT4821": two letters, 1-9999), or personalised ("L0VEBB", up to 8
    characters) for a share ``personalised`` of the cars. ``plates`` gives the marks
    instead (letters without I, O or Q, and digits); they are then all the clip shows,
    so "mixed" leaves cross-boundary plates out. A share ``wear`` of the plates have
    screws, a dealer's frame, road dirt or uneven light.

    ``blur`` is a Gaussian lens-blur sigma in pixels and ``noise`` the standard
    deviation of the sensor grain in grey levels; ``exposure_s`` is the shutter time,
    which turns each plate's image speed into motion blur along its direction.
    ``peak_plate_frac`` is the range of each pass's largest plate width as a fraction
    of the frame width and ``legible_seconds`` the range of time it stays legible
    (doubled for ``follow`` passes, legible on the way in and out again). Cars in
    the next lane (``approach``, ``overtake``) leave the view before their plates get
    wider than about a tenth of the frame.

    Kinds of pass: ``approach`` (we gain on a car in the next lane: its plate grows
    and slides out through the side), ``overtake`` (the reverse: it enters at the
    side and shrinks towards the middle), ``follow`` (a car ahead in our lane comes
    closer and falls back) and ``cross`` (a side view of parked cars: the plate
    slides across the frame at about constant size).
    """

    size: tuple[int, int] = (1280, 720)
    fps: float = 30.0
    seconds: float | None = None
    seed: int = 0
    passes: int | None = None
    plates: tuple[str, ...] = ()
    blur: float = 0.7
    noise: float = 3.0
    exposure_s: float = 1 / 250
    codec: str = "mp4v"
    style: Literal["mixed", "front", "rear", "two-row", "crossboundary"] = "mixed"
    personalised: float = 0.1
    wear: float = 0.3
    kinds: tuple[Kind, ...] = KINDS
    peak_plate_frac: tuple[float, float] = (0.08, 0.15)
    legible_seconds: tuple[float, float] = (0.6, 1.4)
    legible_px: float = LEGIBLE_PX
    overlap: float = 0.2

    def __post_init__(self) -> None:
        w, h = self.size
        if w < 160 or h < 90:
            raise ValueError(f"frame size {w}x{h} is too small (at least 160x90)")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"fps must be 1..240, got {self.fps}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.passes is not None and self.passes < 1:
            raise ValueError(f"passes must be at least 1, got {self.passes}")
        if self.plates and self.passes is not None and self.passes != len(self.plates):
            raise ValueError("passes and plates disagree on the number of passes")
        texts = [_mark(t) for t in self.plates]
        if len(set(texts)) != len(texts) or not all(texts):
            raise ValueError("plate texts must be non-empty and unique within a clip")
        for text in texts:
            if not HK_MARK.fullmatch(text):
                raise ValueError(
                    f"{text!r} is not a Hong Kong mark: up to {MAX_MARK} letters and digits, "
                    "never I, O or Q"
                )
        if self.blur < 0 or self.noise < 0 or self.exposure_s < 0:
            raise ValueError("blur, noise and exposure_s must not be negative")
        if self.exposure_s > 1 / self.fps:
            raise ValueError("exposure_s cannot be longer than one frame")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.style != "mixed" and self.style not in PLATE_STYLES:
            raise ValueError(
                f"style must be mixed or one of {', '.join(PLATE_STYLES)}, got {self.style!r}"
            )
        if not (0 <= self.personalised <= 1 and 0 <= self.wear <= 1):
            raise ValueError("personalised and wear are shares of the cars, 0..1")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}")
        low, high = self.peak_plate_frac
        if not 0 < low <= high < 0.5:
            raise ValueError(f"peak_plate_frac must satisfy 0 < low <= high < 0.5, got {low, high}")
        low, high = self.legible_seconds
        if not 0 < low <= high:
            raise ValueError(f"legible_seconds must satisfy 0 < low <= high, got {low, high}")
        if not 0 <= self.overlap <= 1:
            raise ValueError(f"overlap is a probability, got {self.overlap}")

    @classmethod
    def from_dict(cls, data: dict) -> ClipSpec:
        data = dict(data)
        for key in ("size", "plates", "kinds", "peak_plate_frac", "legible_seconds"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _mark(text: str) -> str:
    """A mark as plates are compared: upper case, no spaces."""
    return text.replace(" ", "").upper()


@dataclass(frozen=True)
class PassTruth:
    """One car's plate passing through the view.

    ``text`` is its Hong Kong mark; ``style`` which plates the car carries (one of
    :data:`PLATE_STYLES`: "front" and "rear" are one-row plates, white and yellow,
    "two-row" a two-row yellow plate, "crossboundary" a one-row plate with the black
    Guangdong plate ``crossboundary`` (as issued, "粤Z1234港") under it); ``kind``
    how the car moves (one of :data:`KINDS`).

    ``boxes[k]`` is the Hong Kong plate's box (x1, y1, x2, y2), clipped to the frame,
    in frame ``first_frame + k``; the plate is at least partly in view from
    ``first_frame`` to ``last_frame``. Legible frames (``first_legible_frame`` to
    ``last_legible_frame``, None when it never is) show the whole plate at least
    ``legible_px`` wide.
    """

    text: str
    style: str
    kind: str
    first_frame: int
    last_frame: int
    first_legible_frame: int | None
    last_legible_frame: int | None
    boxes: tuple[Box, ...]
    crossboundary: str | None = None

    def box_at(self, frame: int) -> Box | None:
        if self.first_frame <= frame <= self.last_frame:
            return self.boxes[frame - self.first_frame]
        return None

    def legible_frames(self) -> range:
        if self.first_legible_frame is None or self.last_legible_frame is None:
            return range(0)
        return range(self.first_legible_frame, self.last_legible_frame + 1)

    @property
    def peak_width(self) -> float:
        return max(b[2] - b[0] for b in self.boxes)


@dataclass(frozen=True)
class ClipTruth:
    """Ground truth of a clip; written next to the video as JSON.

    ``spec`` is what a generated clip was made from; a clip made from labelled photos
    (:mod:`edge.bench.photoclips`) has none and says where it came from in ``source``
    instead. ``fine_to_read`` are texts of other plates in the picture (labelled but
    not the pass's own): reading one is neither a pass read nor a wrong read. In a
    generated clip those are the cross-boundary plates under passing Hong Kong plates,
    as the recogniser reports their ``plate`` (the core, "Z1234"); the pass they ride
    with names the whole mark in its ``crossboundary``.
    """

    size: tuple[int, int]
    fps: float
    frame_count: int
    legible_px: float
    passes: tuple[PassTruth, ...]
    spec: ClipSpec | None
    source: dict | None = None
    fine_to_read: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return self.frame_count / self.fps

    def visible_at(self, frame: int) -> list[tuple[PassTruth, Box]]:
        """The passes whose plate is in view in ``frame``, with their boxes."""
        found = []
        for p in self.passes:
            box = p.box_at(frame)
            if box is not None:
                found.append((p, box))
        return found

    def to_dict(self) -> dict:
        spec = asdict(self.spec) if self.spec is not None else None
        return {
            "version": TRUTH_VERSION,
            "size": list(self.size),
            "fps": self.fps,
            "frame_count": self.frame_count,
            "legible_px": self.legible_px,
            "spec": None
            if spec is None
            else {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()},
            "source": self.source,
            "fine_to_read": list(self.fine_to_read),
            "passes": [
                {
                    "text": p.text,
                    "style": p.style,
                    "kind": p.kind,
                    "first_frame": p.first_frame,
                    "last_frame": p.last_frame,
                    "first_legible_frame": p.first_legible_frame,
                    "last_legible_frame": p.last_legible_frame,
                    "boxes": [list(b) for b in p.boxes],
                    "crossboundary": p.crossboundary,
                }
                for p in self.passes
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> ClipTruth:
        if data.get("version") != TRUTH_VERSION:
            raise ValueError(f"unsupported clip truth version {data.get('version')!r}")
        passes = tuple(
            PassTruth(
                text=p["text"],
                style=p["style"],
                kind=p["kind"],
                first_frame=p["first_frame"],
                last_frame=p["last_frame"],
                first_legible_frame=p["first_legible_frame"],
                last_legible_frame=p["last_legible_frame"],
                boxes=tuple(tuple(float(v) for v in b) for b in p["boxes"]),
                crossboundary=p.get("crossboundary"),
            )
            for p in data["passes"]
        )
        return cls(
            size=tuple(data["size"]),
            fps=float(data["fps"]),
            frame_count=int(data["frame_count"]),
            legible_px=float(data["legible_px"]),
            passes=passes,
            spec=None if data["spec"] is None else ClipSpec.from_dict(data["spec"]),
            source=data.get("source"),
            fine_to_read=tuple(data.get("fine_to_read", ())),
        )

    @classmethod
    def load(cls, path: str | Path) -> ClipTruth:
        """From the truth JSON, or from the video path (its ``.json`` sibling)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_suffix(".json")
        return cls.from_dict(json.loads(path.read_text()))
