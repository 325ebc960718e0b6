"""Generated dashcam clips with per-frame ground truth, for tests, the demo and benchmarks.

The camera is a patrol car's roof camera; other cars pass through its view one after
another, each carrying a Hong Kong plate drawn by :mod:`edge.synth_hk` in real
typefaces: one-row white front and yellow rear plates, two-row yellow rear plates,
standard and now and then personalised marks, and the odd cross-boundary vehicle with
its black Guangdong plate (粤Z1234港) hung under the Hong Kong one. Every pass is a
car on a small 3-D trajectory seen through a pinhole camera, so its plate grows,
shrinks and slides the way real plates do, with a little yaw and roll, motion blur
along its image velocity, lens blur and sensor grain. Passes are mostly sequential
with empty road between them, so a tracker has to end one track and start the next;
now and then two cars are in view at once, never on top of each other.

:func:`render_clip` writes the video and a JSON ground truth next to it;
:class:`ClipRenderer` yields the frames without a codec. The same :class:`ClipSpec`
always gives the same truth and the same pixels (before the codec).

``python -m edge.synth.clipplan OUT.mp4 [--seconds N --size 1920x1080 --fps 30 --seed S]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge import crossboundary
from edge.synth.hkplates import (
    CROSSBOUNDARY_MM,
    MAX_MARK,
    ONE_ROW_MM,
    TWO_ROW_MM,
    TYPEFACES,
    random_crossboundary_mark,
    random_personalised_mark,
    random_standard_mark,
    render_hk_plate,
)
from edge.synth.scenes import UNIFORM_BYTE_STD, _background, _scaled_quad, _shade, draw_car_body

Kind = Literal["approach", "overtake", "follow", "cross"]
KINDS: tuple[Kind, ...] = ("approach", "overtake", "follow", "cross")
CODECS = {"mp4v": ".mp4", "MJPG": ".avi", "FFV1": ".mkv"}
TRUTH_VERSION = 1
# Extra rows and columns of the grain pool, so each frame can read it at its own offset.
NOISE_PAD = 61

# A plate this many pixels wide (and wholly inside the frame) counts as legible: the
# height of its characters is then about 9 px, roughly the smallest the OCR reads.
LEGIBLE_PX = 60.0

# The plates a car can carry (PassTruth.style): a one-row plate, white ("front") or
# yellow ("rear"); a two-row yellow rear plate; or a one-row plate of either colour
# with a cross-boundary vehicle's black Guangdong plate hung under it.
PlateStyle = Literal["front", "rear", "two-row", "crossboundary"]
PLATE_STYLES: tuple[PlateStyle, ...] = ("front", "rear", "two-row", "crossboundary")
# How often each comes by when ClipSpec.style is "mixed" (shares of PLATE_STYLES).
STREET_MIX = (0.40, 0.32, 0.20, 0.08)
# Plate sizes, metres (width, height).
ONE_ROW_M = (ONE_ROW_MM[0] / 1000, ONE_ROW_MM[1] / 1000)
TWO_ROW_M = (TWO_ROW_MM[0] / 1000, TWO_ROW_MM[1] / 1000)
CROSSBOUNDARY_M = (CROSSBOUNDARY_MM[0] / 1000, CROSSBOUNDARY_MM[1] / 1000)
# Between the Hong Kong plate and the cross-boundary plate under it.
STACK_GAP_M = 0.01
# What a Hong Kong plate can show: letters (never I, O or Q) and digits, up to 8.
HK_MARK = re.compile(rf"[A-HJ-NPR-Z0-9]{{1,{MAX_MARK}}}")
# A narrow-ish field of view, as on cameras fitted for plate reading; it only sets
# how strongly depth shows in the plate's shape, sizes are chosen in pixels.
HFOV_DEG = 50.0
# Pass lengths and shapes: ranges the generator draws from (seconds, metres, degrees).
CAMERA_ABOVE_PLATE_M = (0.6, 1.0)
CLOSEST_M = 1.5
NEXT_LANE_M = 2.0
MAX_SPEED_MS = 14.0  # relative speed, about 50 km/h
APPEAR_FRACTION = (0.55, 0.75)  # of the legible width: a car enters the view this small
GAP_S = (0.35, 1.0)
OVERLAP_S = (0.2, 0.5)
LEAD_S = (0.2, 0.5)
# Reach of the car _draw_car draws around its plates, in widths (x) and heights (y) of
# a one-row plate: body and shadow sideways, roof above the top plate, bumper and
# shadow below the bottom one.
CAR_REACH_X = 2.35
CAR_REACH_UP = 7.6
CAR_REACH_DOWN = 3.6

Box = tuple[float, float, float, float]
# Lateral offset and distance (metres) of a plate at times t (seconds) into its pass.
Position = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ClipSpec:
    """What to generate. Give ``passes`` or ``plates`` (texts, which fixes the count),
    ``seconds``, or both; with only ``seconds`` as many passes as fit are made, with
    only a count the clip is as long as they need.

    Plates: ``style`` "mixed" draws each car's plates from the street mix (one-row
    white front and yellow rear plates, two-row yellow rear plates, now and then a
    cross-boundary vehicle: see :data:`STREET_MIX`); "front", "rear", "two-row" or
    "crossboundary" gives every car that. Generated marks are standard ("KT4821": two
    letters, 1-9999), or personalised ("L0VEBB", up to 8 characters) for a share
    ``personalised`` of the cars. ``plates`` gives the marks instead (letters without
    I, O or Q, and digits); they are then all the clip shows, so "mixed" leaves
    cross-boundary plates out. A share ``wear`` of the plates have screws, a dealer's
    frame, road dirt or uneven light.

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


# --- planning: where every plate is in every frame ----------------------------------


@dataclass(frozen=True)
class _CarPlates:
    """The plates one car carries and how they look."""

    text: str  # the Hong Kong mark
    style: PlateStyle
    colour: Literal["front", "rear"]  # of the Hong Kong plate: white or yellow
    typeface: str
    crossboundary: str | None  # the Guangdong plate under it, as issued
    seed: int  # the plates' maker's variations and their wear

    @property
    def rows(self) -> int:
        return 2 if self.style == "two-row" else 1

    @property
    def size_m(self) -> tuple[float, float]:
        """Width and height of the Hong Kong plate, metres."""
        return TWO_ROW_M if self.style == "two-row" else ONE_ROW_M

    def outlines_m(self) -> np.ndarray:
        """(k, 4, 2) corners of each plate, clockwise from top left, in metres from
        the Hong Kong plate's centre (y down): that plate, then any plate under it."""
        w, h = self.size_m
        rects = [(w, h, 0.0)]
        if self.crossboundary is not None:
            cw, ch = CROSSBOUNDARY_M
            rects.append((cw, ch, h / 2 + STACK_GAP_M + ch / 2))
        return np.array(
            [
                [[-pw / 2, cy - ph / 2], [pw / 2, cy - ph / 2], [pw / 2, cy + ph / 2],
                 [-pw / 2, cy + ph / 2]]
                for pw, ph, cy in rects
            ]
        )  # fmt: skip


@dataclass
class _Pass:
    plates: _CarPlates
    kind: Kind
    car_seed: int
    start: int  # first frame in which the car is drawn
    # (n, k, 4, 2) corners of each of the car's plates per drawn frame, Hong Kong plate
    # first, clockwise from top left.
    corners: np.ndarray
    # (n, 2) the size in pixels a one-row plate would have there: what the car is
    # sized by, so a car with a two-row plate or two plates is as big as any other.
    unit: np.ndarray
    blur: np.ndarray  # (n, 2) image displacement during the exposure
    car_boxes: np.ndarray = field(init=False)  # (n, 4) where the car body can reach

    def __post_init__(self) -> None:
        self.car_boxes = _car_boxes(self.corners, self.unit)

    @property
    def text(self) -> str:
        return self.plates.text

    @property
    def end(self) -> int:
        return self.start + len(self.corners) - 1


def _car_boxes(corners: np.ndarray, unit: np.ndarray) -> np.ndarray:
    points = corners.reshape(len(corners), -1, 2)
    low, high = points.min(axis=1), points.max(axis=1)
    cx = (low[:, 0] + high[:, 0]) / 2
    return np.stack(
        [
            cx - CAR_REACH_X * unit[:, 0],
            low[:, 1] - CAR_REACH_UP * unit[:, 1],
            cx + CAR_REACH_X * unit[:, 0],
            high[:, 1] + CAR_REACH_DOWN * unit[:, 1],
        ],
        axis=1,
    )


def _in_frame(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    return (boxes[:, 2] > 0) & (boxes[:, 0] < w) & (boxes[:, 3] > 0) & (boxes[:, 1] < h)


class _Camera:
    def __init__(self, size: tuple[int, int], horizon: float):
        w, _ = size
        self.f = (w / 2) / math.tan(math.radians(HFOV_DEG) / 2)
        self.cx, self.cy = w / 2, horizon

    def z_for_width(self, px: float, width_m: float) -> float:
        """Distance at which a plate ``width_m`` wide facing the camera is ``px`` pixels wide."""
        return self.f * width_m / px

    def project(self, x, y, z, yaw: float, roll: float, local: np.ndarray) -> np.ndarray:
        """Image points (n, *local.shape) of the points ``local`` (..., 2: metres in the
        plane of a plate, y down) of a plate centred at (x, y, z) metres (y down)."""
        flat = local.reshape(-1, 2)
        cr, sr = math.cos(roll), math.sin(roll)
        px = flat[:, 0] * cr - flat[:, 1] * sr
        py = flat[:, 0] * sr + flat[:, 1] * cr
        cy_, sy_ = math.cos(yaw), math.sin(yaw)
        # Yaw about the vertical axis puts one side of the plate nearer the camera.
        wx = np.asarray(x, np.float64)[:, None] + px * cy_
        wy = np.asarray(y, np.float64)[:, None] + py
        wz = np.asarray(z, np.float64)[:, None] + px * sy_
        points = np.stack([self.cx + self.f * wx / wz, self.cy + self.f * wy / wz], axis=-1)
        return points.reshape(len(points), *local.shape)


def _trajectory(
    kind: Kind,
    spec: ClipSpec,
    cam: _Camera,
    rng: np.random.Generator,
    side: int,
    plate_w: float,
) -> tuple[float, Position, float, float, float]:
    """(duration, position(t) -> (x, z), height, yaw, roll) for one pass of a car
    whose Hong Kong plate is ``plate_w`` metres wide.

    Sizes are decided in pixels of that plate (peak width, width at which it becomes
    legible) and turned into distances and speeds, so every pass has a legible window
    of about the requested length whatever the frame size.
    """
    w, _ = spec.size
    peak = rng.uniform(*spec.peak_plate_frac) * w
    legible_for = rng.uniform(*spec.legible_seconds)
    # A narrower plate is nearer at the same size in pixels, and would sit lower in the
    # frame (out of it, at its largest); as if mounted higher, it shows where a one-row
    # plate of that size would.
    height = rng.uniform(*CAMERA_ABOVE_PLATE_M) * plate_w / ONE_ROW_M[0]
    roll = math.radians(rng.uniform(-3, 3))
    yaw = math.radians(rng.uniform(-8, 8))
    lateral = 0.0
    if kind in ("approach", "overtake"):
        # Its plate leaves through the side of the frame about when it is widest;
        # that fixes how far to the side the car drives. A car nearer than the next
        # lane would stay in view until we ran into it, so very large peaks are cut
        # to what the next lane allows (about a tenth of the frame width).
        margin = rng.uniform(0.01, 0.05) * w
        lateral = max(NEXT_LANE_M, (w / 2 - margin - peak / 2) * plate_w / peak)
        peak = (w / 2 - margin) / (lateral / plate_w + 0.5)
        lateral *= side
    # The width a pass is timed by: the legible width, or less for a pass that never
    # gets that big (small frames), so it still lasts about as long.
    ref = min(spec.legible_px, 0.8 * peak)
    z_peak, z_ref = cam.z_for_width(peak, plate_w), cam.z_for_width(ref, plate_w)
    z_appear = cam.z_for_width(ref * rng.uniform(*APPEAR_FRACTION), plate_w)

    if kind in ("approach", "overtake"):
        # A car in the next lane that we gain on: it grows and slides out through
        # the side of the frame. Overtaking is the same path backwards.
        speed = min(MAX_SPEED_MS, (z_ref - z_peak) / legible_for)
        duration = (z_appear - CLOSEST_M) / speed

        def position(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if kind == "overtake":
                t = duration - t
            return np.full_like(t, lateral), z_appear - speed * t

        return duration, position, height, yaw, roll

    if kind == "follow":
        # A car ahead in about our lane: we close in and fall back again, the gap
        # changing with constant relative acceleration. That is slower than passing
        # it, so it stays legible twice as long, and a peak that would need a
        # relative speed beyond MAX_SPEED_MS is not reached.
        legible_for *= 2
        z_peak = max(z_peak, z_ref - MAX_SPEED_MS * legible_for / 4)
        lateral = rng.uniform(-1.0, 1.0)
        accel = (z_ref - z_peak) / (legible_for / 2) ** 2
        half = math.sqrt((z_appear - z_peak) / accel)

        def position(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.full_like(t, lateral), z_peak + accel * (t - half) ** 2

        return 2 * half, position, height, yaw, roll

    # cross: a side camera passing a parked or queued car at about constant
    # distance, its plate seen at a slight angle, sliding across the whole frame.
    yaw = math.radians(side * rng.uniform(4, 14))
    z = z_peak
    px_speed = max(w - peak, w / 4) / legible_for
    # The car is sized by a one-row plate, wider than a two-row one.
    reach = (CAR_REACH_X + 0.2) * peak * ONE_ROW_M[0] / plate_w
    duration = (w + 2 * reach) / px_speed
    drift = rng.uniform(-0.05, 0.05) * z

    def position(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = -reach + px_speed * t if side > 0 else w + reach - px_speed * t
        zt = z + drift * (t / duration - 0.5)
        return (u - cam.cx) * zt / cam.f, zt

    return duration, position, height, yaw, roll


def _motion(
    kind: Kind,
    spec: ClipSpec,
    cam: _Camera,
    rng: np.random.Generator,
    side: int,
    plates: _CarPlates,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plate corners (n, k, 4, 2), the car's unit (n, 2, see :class:`_Pass`) and the
    exposure displacement (n, 2) for the frames in which the car shows."""
    w, h = spec.size
    duration, position, height, yaw, roll = _trajectory(
        kind, spec, cam, rng, side, plates.size_m[0]
    )
    t = np.arange(int(duration * spec.fps) + 1) / spec.fps
    x, z = position(t)
    keep = z >= CLOSEST_M
    outlines = plates.outlines_m()
    corners = cam.project(x, np.full_like(x, height), z, yaw, roll, outlines)
    unit = cam.f * np.array(ONE_ROW_M) / z[:, None]
    keep &= _in_frame(_car_boxes(corners, unit), w, h)
    idx = np.nonzero(keep)[0]
    if not len(idx):
        raise ValueError("a pass never comes into view; the frame is too small")
    sel = slice(idx[0], idx[-1] + 1)
    t, corners, unit = t[sel], corners[sel], unit[sel]
    centres = []
    for dt in (spec.exposure_s / 2, -spec.exposure_s / 2):
        x, z = position(t + dt)
        plate = cam.project(x, np.full_like(x, height), z, yaw, roll, outlines[0])
        centres.append(plate.mean(axis=1))
    return corners, unit, centres[0] - centres[1]


def _conflicts(new: _Pass, placed: Sequence[_Pass]) -> bool:
    """Whether ``new`` would be drawn over another car in some frame."""
    for other in placed:
        lo, hi = max(new.start, other.start), min(new.end, other.end)
        if lo > hi:
            continue
        a = new.car_boxes[lo - new.start : hi - new.start + 1]
        b = other.car_boxes[lo - other.start : hi - other.start + 1]
        apart = (a[:, 2] <= b[:, 0]) | (b[:, 2] <= a[:, 0]) | (a[:, 3] <= b[:, 1])
        apart |= b[:, 3] <= a[:, 1]
        if not apart.all():
            return True
    return False


def _truth_of(p: _Pass, spec: ClipSpec) -> PassTruth | None:
    w, h = spec.size
    hk_plate = p.corners[:, 0]
    low, high = hk_plate.min(axis=1), hk_plate.max(axis=1)
    boxes = np.concatenate([low, high], axis=1)
    seen = np.nonzero(_in_frame(boxes, w, h))[0]
    if not len(seen):
        return None
    inside = (low[:, 0] >= 0) & (low[:, 1] >= 0) & (high[:, 0] <= w) & (high[:, 1] <= h)
    legible = np.nonzero(inside & (high[:, 0] - low[:, 0] >= spec.legible_px))[0]
    first, last = int(seen[0]), int(seen[-1])
    clipped = np.clip(boxes[first : last + 1], 0, [w, h, w, h])
    return PassTruth(
        text=p.text,
        style=p.plates.style,
        kind=p.kind,
        first_frame=p.start + first,
        last_frame=p.start + last,
        first_legible_frame=p.start + int(legible[0]) if len(legible) else None,
        last_legible_frame=p.start + int(legible[-1]) if len(legible) else None,
        boxes=tuple(tuple(round(float(v), 2) for v in b) for b in clipped),
        crossboundary=p.plates.crossboundary,
    )


@dataclass
class _Plan:
    passes: list[_Pass]
    truth: ClipTruth
    shake: np.ndarray  # (n, 2) integer whole-view displacement per frame
    drift: np.ndarray  # (n,) integer background drift per frame
    noise_offsets: np.ndarray  # (n, 2)
    background_seed: int
    noise_seed: int


def _horizon_fraction(seed: int) -> float:
    # edge.synth._background draws the horizon row first, as this fraction of the
    # height; a generator on the same seed tells where it will be, so distant cars
    # sit on the road rather than among the buildings. Only the look depends on it.
    return float(np.random.default_rng(seed).uniform(0.25, 0.45))


def _car_plates(
    spec: ClipSpec, index: int, rng: np.random.Generator, taken: set[str]
) -> _CarPlates:
    """The plates of the ``index``-th car: its style, mark and look. ``taken`` holds
    the texts already in the clip (marks and cross-boundary cores), which it avoids."""
    if spec.style == "mixed":
        # Given marks are all the plates the clip is to show: no cross-boundary plate
        # comes with them unless asked for.
        mix = np.array(STREET_MIX[:3] if spec.plates else STREET_MIX)
        style = PLATE_STYLES[int(rng.choice(len(mix), p=mix / mix.sum()))]
    else:
        style = spec.style
    if spec.plates:
        text = _mark(spec.plates[index])
    else:
        text = ""
        while not text or text in taken:
            personal = rng.random() < spec.personalised
            text = random_personalised_mark(rng) if personal else random_standard_mark(rng)
    taken.add(text)
    mark = None
    if style == "crossboundary":
        # Its core is what the recogniser reports; it must not be another car's mark.
        while mark is None or _core(mark) in taken:
            mark = random_crossboundary_mark(rng)
        taken.add(_core(mark))
    colour = {"front": "front", "rear": "rear", "two-row": "rear"}.get(style)
    if colour is None:
        colour = ("front", "rear")[int(rng.integers(2))]
    typeface = tuple(TYPEFACES)[int(rng.integers(len(TYPEFACES)))]
    return _CarPlates(text, style, colour, typeface, mark, int(rng.integers(2**31)))


def _core(mark: str) -> str:
    """The core of a cross-boundary mark ("粤Z1234港" -> "Z1234"): what the recogniser
    reports as its plate."""
    found = crossboundary.CORE.search(mark)
    if found is None:
        raise ValueError(f"{mark!r} is not a cross-boundary mark")
    return found.group()


def _plan(spec: ClipSpec) -> _Plan:
    w, h = spec.size
    fps = spec.fps
    root = np.random.SeedSequence(spec.seed)
    plan_seed, plates_seed, background_seed, noise_seed = (
        int(s.generate_state(1)[0]) for s in root.spawn(4)
    )
    rng = np.random.default_rng(plan_seed)
    # Plates come from their own generator: the same cars move alike whatever they carry.
    plates_rng = np.random.default_rng(plates_seed)
    margin = _background_margin(spec.size)
    horizon = _horizon_fraction(background_seed) * (h + 2 * margin) - margin
    cam = _Camera(spec.size, horizon)

    wanted = len(spec.plates) if spec.plates else spec.passes
    if wanted is None and spec.seconds is None:
        spec_seconds: float | None = 10.0
    else:
        spec_seconds = spec.seconds
    limit = round(spec_seconds * fps) if spec_seconds is not None else None
    tail = round(rng.uniform(*LEAD_S) * fps)
    cursor = round(rng.uniform(*LEAD_S) * fps)
    taken = {_mark(t) for t in spec.plates}
    passes: list[_Pass] = []
    last_side = 1
    while wanted is None or len(passes) < wanted:
        kind = spec.kinds[int(rng.integers(len(spec.kinds)))]
        overlap = bool(passes) and rng.random() < spec.overlap
        side = -last_side if overlap else (1 if rng.random() < 0.5 else -1)
        plates = _car_plates(spec, len(passes), plates_rng, taken)
        corners, unit, blur = _motion(kind, spec, cam, rng, side, plates)
        car_seed = int(rng.integers(2**31))
        start = cursor
        if overlap:
            start = max(0, passes[-1].end - round(rng.uniform(*OVERLAP_S) * fps))
        new = _Pass(plates, kind, car_seed, start, corners, unit, blur)
        while _conflicts(new, passes):
            new.start += 1
        if limit is not None and new.end + tail >= limit:
            if wanted is not None:
                raise ValueError(
                    f"{wanted} passes do not fit in {spec_seconds:g} s; "
                    f"leave seconds out to get a clip as long as they need"
                )
            break
        passes.append(new)
        last_side = side
        cursor = max(p.end for p in passes) + 1 + round(rng.uniform(*GAP_S) * fps)
    frame_count = limit if limit is not None else max(p.end for p in passes) + 1 + tail

    # Vehicle vibration moves the whole view by a pixel or two; the background also
    # drifts slowly sideways as the road bends.
    t = np.arange(frame_count) / fps
    scale = h / 720
    phases = rng.uniform(0, 2 * math.pi, 4)
    shake_y = 1.2 * scale * (np.sin(2 * math.pi * 1.7 * t + phases[0]))
    shake_y += 0.6 * scale * np.sin(2 * math.pi * 4.3 * t + phases[1])
    shake_x = 0.6 * scale * np.sin(2 * math.pi * 1.1 * t + phases[2])
    shake = np.stack([shake_x, shake_y], axis=1).round().astype(np.int64)
    drift = (0.5 * margin * np.sin(2 * math.pi * t / rng.uniform(8, 16) + phases[3])).round()
    noise_offsets = np.stack(
        [rng.integers(0, NOISE_PAD, frame_count), rng.integers(0, NOISE_PAD, frame_count)], axis=1
    )

    truths = []
    for p in passes:
        p.corners = p.corners + shake[p.start : p.end + 1, None, None, :]
        p.car_boxes = _car_boxes(p.corners, p.unit)
        truth = _truth_of(p, spec)
        if truth is not None:
            truths.append(truth)
    truth = ClipTruth(
        size=(w, h),
        fps=float(fps),
        frame_count=int(frame_count),
        legible_px=float(spec.legible_px),
        passes=tuple(truths),
        spec=spec,
        # The cross-boundary plates ride with their passes: reading one is no wrong read.
        fine_to_read=tuple(_core(t.crossboundary) for t in truths if t.crossboundary),
    )
    return _Plan(
        passes=passes,
        truth=truth,
        shake=shake,
        drift=drift.astype(np.int64),
        noise_offsets=noise_offsets,
        background_seed=background_seed,
        noise_seed=noise_seed,
    )


def plan_clip(spec: ClipSpec) -> ClipTruth:
    """The ground truth of the clip ``spec`` describes, without drawing anything."""
    return _plan(spec).truth


# --- drawing -------------------------------------------------------------------------


def _background_margin(size: tuple[int, int]) -> int:
    return max(8, round(0.02 * size[0]))


def _line_kernel(dx: float, dy: float) -> np.ndarray:
    """A normalised kernel spreading a point along the segment (dx, dy) (motion blur)."""
    kw = 2 * math.ceil(abs(dx) / 2) + 1
    kh = 2 * math.ceil(abs(dy) / 2) + 1
    kernel = np.zeros((kh, kw), np.float32)
    n = math.ceil(4 * math.hypot(dx, dy)) + 2
    s = np.linspace(-0.5, 0.5, n)
    xs, ys = kw // 2 + s * dx, kh // 2 + s * dy
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    # Bilinear splats keep a sub-pixel length's share where it belongs.
    for ox, oy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = np.clip(x0 + ox, 0, kw - 1), np.clip(y0 + oy, 0, kh - 1)
        np.add.at(kernel, (yi, xi), wgt)
    return kernel / kernel.sum()


class ClipRenderer:
    """Frames of the clip ``spec`` describes (BGR uint8), one at a time or in order.

    The road is drawn once; each frame is a crop of it with the cars drawn into their
    own regions, so a frame costs little more than its copy and its grain.
    """

    def __init__(self, spec: ClipSpec):
        self.spec = spec
        self._plan = _plan(spec)
        self.truth = self._plan.truth
        w, h = spec.size
        self._margin = _background_margin(spec.size)
        road = _background(
            (w + 2 * self._margin, h + 2 * self._margin),
            np.random.default_rng(self._plan.background_seed),
        )
        self._sigma = spec.blur
        if self._sigma > 0:
            road = cv2.GaussianBlur(road, (0, 0), self._sigma)
        self._road = road
        self._grain_k = spec.noise / UNIFORM_BYTE_STD
        # One pool of grain, read at a different offset each frame: as random to the
        # eye and to the detector as fresh draws, at the cost of a slice.
        self._grain = (
            np.random.default_rng(self._plan.noise_seed).integers(
                0, 256, (h + NOISE_PAD, w + NOISE_PAD, 3), dtype=np.uint8
            )
            if self._grain_k > 0
            else None
        )
        # Each pass's plates drawn once, as wide as they get in the pass; every frame
        # shrinks them to its size, which is far cheaper than drawing text again.
        self._plate_images: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return self.truth.frame_count

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i)

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the clip (0..{len(self) - 1})")
        w, h = self.spec.size
        plan = self._plan
        sx, sy = plan.shake[index]
        ox = int(np.clip(self._margin + plan.drift[index] - sx, 0, 2 * self._margin))
        oy = int(np.clip(self._margin - sy, 0, 2 * self._margin))
        img = self._road[oy : oy + h, ox : ox + w].copy()
        active = [(i, p) for i, p in enumerate(plan.passes) if p.start <= index <= p.end]
        # Far cars first, though the planner keeps cars apart anyway.
        active.sort(key=lambda item: float(item[1].unit[index - item[1].start, 0]))
        for i, p in active:
            self._draw(img, p, index - p.start, self._images(i, p))
        if self._grain is not None:
            gx, gy = plan.noise_offsets[index]
            grain = self._grain[gy : gy + h, gx : gx + w]
            k = self._grain_k
            img = cv2.addWeighted(img, 1.0, grain, k, -127.5 * k, dtype=cv2.CV_8U)
        return img

    def _images(self, index: int, p: _Pass) -> list[np.ndarray]:
        """The pass's plates (Hong Kong plate first) at the largest size they show."""
        images = self._plate_images.get(index)
        if images is None:
            if len(self._plate_images) > 16:
                self._plate_images.clear()
            images = self._plate_images[index] = _draw_plates(p, self.spec.wear)
        return images

    def _draw(self, img: np.ndarray, p: _Pass, k: int, images: list[np.ndarray]) -> None:
        h, w = img.shape[:2]
        bx, by = (float(v) for v in p.blur[k])
        pad = math.ceil(abs(bx) + abs(by) + 3 * self._sigma) + 3
        cx0, cy0, cx1, cy1 = p.car_boxes[k]
        x0, y0 = max(0, math.floor(cx0) - pad), max(0, math.floor(cy0) - pad)
        x1, y1 = min(w, math.ceil(cx1) + pad), min(h, math.ceil(cy1) + pad)
        if x1 <= x0 or y1 <= y0:
            return
        under = img[y0:y1, x0:x1]
        layer = under.copy()
        local = p.corners[k] - [x0, y0]
        # A fresh generator on the pass's seed: the same car, frame after frame.
        _draw_car(layer, local, p.unit[k], np.random.default_rng(p.car_seed))
        pasted = [
            _paste_plate(layer, image, quad) for image, quad in zip(images, local, strict=True)
        ]
        shown = np.array([b for b in pasted if b is not None]).reshape(-1, 4)
        plate_box = None
        if len(shown):
            plate_box = (*shown[:, :2].min(axis=0).tolist(), *shown[:, 2:].max(axis=0).tolist())

        diff = cv2.absdiff(layer, under)
        alpha = ((diff[:, :, 0] | diff[:, :, 1] | diff[:, :, 2]) > 0).astype(np.float32)
        blurred = layer
        box = (max(1, round(abs(bx))), max(1, round(abs(by))))
        if box != (1, 1):
            # A box filter is the smear of the flat car body; the plates themselves get
            # the exact directional kernel below.
            blurred = cv2.blur(layer, box)
            alpha = cv2.blur(alpha, box)
        if self._sigma > 0:
            blurred = cv2.GaussianBlur(blurred, (0, 0), self._sigma)
            alpha = cv2.GaussianBlur(alpha, (0, 0), self._sigma)
        if plate_box is not None and math.hypot(bx, by) >= 0.5:
            self._blur_plate(layer, blurred, plate_box, bx, by)
        img[y0:y1, x0:x1] = cv2.blendLinear(blurred, under, alpha, 1 - alpha)

    def _blur_plate(
        self,
        layer: np.ndarray,
        blurred: np.ndarray,
        plate_box: tuple[int, int, int, int],
        bx: float,
        by: float,
    ) -> None:
        lh, lw = layer.shape[:2]
        x0, y0, x1, y1 = plate_box
        # The plate and its holder, plus room for the kernels to read from.
        grow_x = round(0.12 * (x1 - x0)) + 2
        grow_y = round(0.35 * (y1 - y0)) + 2
        reach = math.ceil(abs(bx) / 2 + abs(by) / 2 + 3 * self._sigma) + 2
        ix0, iy0 = max(0, x0 - grow_x), max(0, y0 - grow_y)
        ix1, iy1 = min(lw, x1 + grow_x), min(lh, y1 + grow_y)
        ox0, oy0 = max(0, ix0 - reach), max(0, iy0 - reach)
        ox1, oy1 = min(lw, ix1 + reach), min(lh, iy1 + reach)
        sharp = layer[oy0:oy1, ox0:ox1]
        smeared = cv2.filter2D(sharp, -1, _line_kernel(bx, by))
        if self._sigma > 0:
            smeared = cv2.GaussianBlur(smeared, (0, 0), self._sigma)
        blurred[iy0:iy1, ix0:ix1] = smeared[iy0 - oy0 : iy1 - oy0, ix0 - ox0 : ix1 - ox0]


def _draw_car(img: np.ndarray, quads: np.ndarray, unit: np.ndarray, rng) -> None:
    """The back of a car around its plates ``quads`` (k, 4, 2: the Hong Kong plate, then
    any plate under it), sized by ``unit``, the pixel size of a one-row plate there.

    The detector barely fires on a plate floating on a flat blob: it looks for the
    surroundings of a real plate. The recess and the dark holder around the plates,
    the bumper below and the lights and trunk above are what lift its score.
    """
    outline = np.array([quads[0][0], quads[0][1], quads[-1][2], quads[-1][3]])
    (x1, y1), (x2, y2) = outline.min(axis=0), outline.max(axis=0)
    unit_w, unit_h = (float(v) for v in unit)
    colour = draw_car_body(img, (x1 + x2) / 2, y1, y2, unit_w, unit_h, rng)
    # Margins as edge.synth draws them around a one-row plate (its width and height
    # times 1.16 x 1.55 for the recess, 1.04 x 1.16 for the holder), for any plates.
    span_w, span_h = max(1.0, x2 - x1), max(1.0, y2 - y1)
    for (grow_w, grow_h), fill in (((0.16, 0.55), _shade(colour, 0.55)), ((0.04, 0.16), (20,) * 3)):
        quad = _scaled_quad(outline, 1 + grow_w * unit_w / span_w, 1 + grow_h * unit_h / span_h)
        cv2.fillConvexPoly(img, quad, fill, cv2.LINE_AA)


def _draw_plates(p: _Pass, wear: float) -> list[np.ndarray]:
    """The pass's plates (Hong Kong plate first), each as wide as it gets in the pass,
    drawn by :func:`edge.synth_hk.render_hk_plate` with the pass's own variations."""
    plates = p.plates
    rng = np.random.default_rng(plates.seed)
    worn = rng.random() < wear
    widths = np.linalg.norm(p.corners[:, :, 1] - p.corners[:, :, 0], axis=-1).max(axis=0)
    images = []
    for j, width in enumerate(widths):
        text, style, rows = plates.text, plates.colour, plates.rows
        if j:
            text, style, rows = plates.crossboundary, "crossboundary", 1
        images.append(
            render_hk_plate(
                text,
                rows=rows,
                style=style,
                typeface=plates.typeface,
                width=max(40, math.ceil(width)),
                rng=rng,
                screws=worn and rng.random() < 0.6,
                frame=worn and style != "crossboundary" and rng.random() < 0.4,
                dirt=float(rng.uniform(0, 0.3)) if worn else 0.0,
                lighting=float(rng.uniform(0, 0.3)) if worn else 0.0,
            )
        )
    return images


def _paste_plate(
    layer: np.ndarray, image: np.ndarray, quad: np.ndarray
) -> tuple[int, int, int, int] | None:
    """Warp the plate ``image`` onto ``quad`` (4, 2) in ``layer``; the box it covers."""
    lh, lw = layer.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(lw, x1), min(lh, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    width = max(1, round(float(np.linalg.norm(quad[1] - quad[0]))))
    if width < image.shape[1]:
        # Area averaging first: a perspective warp alone would alias a big shrink.
        height = max(1, round(width * image.shape[0] / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ph, pw = image.shape[:2]
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    matrix = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    # Transparent border: only pixels inside the plate are written, straight into
    # the layer; the dark holder _draw_car put around it hides the hard edge.
    cv2.warpPerspective(
        image,
        matrix,
        (x1 - x0, y1 - y0),
        dst=layer[y0:y1, x0:x1],
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return x0, y0, x1, y1


def iter_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """The clip's frames in order, before any codec."""
    yield from ClipRenderer(spec)


def _open_writer(path: Path, spec: ClipSpec) -> cv2.VideoWriter:
    w, h = spec.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*spec.codec), spec.fps, (w, h))
    if not writer.isOpened():
        raise ValueError(
            f"cannot write {spec.codec} video to {path} (expected a {CODECS[spec.codec]} file name)"
        )
    return writer


def check_video(path: str | Path, truth: ClipTruth) -> None:
    """Open the written video and check its frame count, size and rate against the truth,
    and that its first frame decodes; ValueError naming what does not match."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: cannot be opened for reading")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        ok, first = cap.read()
    finally:
        cap.release()
    problems = []
    if (w, h) != tuple(truth.size):
        problems.append(f"size {w}x{h}, expected {truth.size[0]}x{truth.size[1]}")
    if count != truth.frame_count:
        problems.append(f"{count} frames, expected {truth.frame_count}")
    if abs(fps - truth.fps) > 0.01:
        problems.append(f"{fps:g} fps, expected {truth.fps:g}")
    if not ok or first is None or first.shape != (h, w, 3):
        problems.append("the first frame does not decode")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def render_clip(path: str | Path, spec: ClipSpec, *, timings: dict | None = None) -> ClipTruth:
    """Write the clip to ``path`` and its truth to ``path.with_suffix('.json')``.

    The video is read back to check it. ``timings``, when given, receives the
    seconds spent rendering and encoding.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = ClipRenderer(spec)
    truth = renderer.truth
    render_s = encode_s = 0.0
    writer = _open_writer(path, spec)
    try:
        for i in range(len(renderer)):
            t0 = time.perf_counter()
            frame = renderer.frame(i)
            t1 = time.perf_counter()
            writer.write(frame)
            render_s += t1 - t0
            encode_s += time.perf_counter() - t1
    finally:
        writer.release()
    check_video(path, truth)
    path.with_suffix(".json").write_text(truth.to_json())
    if timings is not None:
        timings.update(render_s=render_s, encode_s=encode_s, frames=len(renderer))
    return truth


# --- command line --------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.synth.clipplan",
        description="Write a generated dashcam clip of passing HK plates and its truth JSON.",
    )
    parser.add_argument("out", type=Path, help="video file (.mp4 for mp4v, .avi MJPG, .mkv FFV1)")
    parser.add_argument("--seconds", type=float, help="clip length (default 10 s)")
    parser.add_argument("--passes", type=int, help="number of passing cars")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codec", choices=sorted(CODECS), default="mp4v")
    parser.add_argument("--blur", type=float, default=ClipSpec.blur, help="lens blur sigma")
    parser.add_argument("--noise", type=float, default=ClipSpec.noise, help="grain std")
    parser.add_argument(
        "--style",
        choices=["mixed", *PLATE_STYLES],
        default=ClipSpec.style,
        help="the plates every car carries (default: the street mix)",
    )
    args = parser.parse_args(argv)
    try:
        spec = ClipSpec(
            size=args.size,
            fps=args.fps,
            seconds=args.seconds,
            seed=args.seed,
            passes=args.passes,
            codec=args.codec,
            blur=args.blur,
            noise=args.noise,
            style=args.style,
        )
        timings: dict = {}
        truth = render_clip(args.out, spec, timings=timings)
    except (ValueError, OSError) as exc:
        print(f"synthclip: {exc}", file=sys.stderr)
        return 2
    fps = truth.fps
    print(
        f"{args.out}: {truth.size[0]}x{truth.size[1]} {fps:g} fps, {truth.frame_count} frames "
        f"({truth.seconds:.1f} s), {len(truth.passes)} pass(es); truth in "
        f"{args.out.with_suffix('.json')}"
    )
    for p in truth.passes:
        legible = p.legible_frames()
        window = (
            f"legible {legible.start}-{legible.stop - 1} ({len(legible) / fps:.2f} s)"
            if legible
            else "never legible"
        )
        plates = f"{p.text} + {p.crossboundary}" if p.crossboundary else p.text
        print(
            f"  {plates:<17} {p.style:<13} {p.kind:<8} frames {p.first_frame}-{p.last_frame}, "
            f"{window}, peak {p.peak_width:.0f} px"
        )
    n = timings["frames"]
    print(
        f"render {timings['render_s'] / n * 1e3:.1f} ms/frame, "
        f"encode {timings['encode_s'] / n * 1e3:.1f} ms/frame"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
