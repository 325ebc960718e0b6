"""Where every plate is in every frame of a generated clip: the traffic and the camera.

The camera is a patrol car's roof camera; other cars pass through its view one after
another, each carrying a Hong Kong plate: one-row white front and yellow rear plates,
two-row yellow rear plates, standard and now and then personalised marks, and the odd
cross-boundary vehicle with its black Guangdong plate (粤Z1234港) hung under the Hong
Kong one. Every pass is a car on a small 3-D trajectory seen through a pinhole camera,
so its plate grows, shrinks and slides the way real plates do, with a little yaw and
roll. Passes are mostly sequential with empty road between them, so a tracker has to
end one track and start the next; now and then two cars are in view at once, never on
top of each other. :func:`plan_clip` gives a spec's ground truth without drawing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge import crossboundary
from edge.synth.clipspec import (
    PLATE_STYLES,
    ClipSpec,
    ClipTruth,
    Kind,
    PassTruth,
    PlateStyle,
    _mark,
)
from edge.synth.hkplates import (
    CROSSBOUNDARY_MM,
    ONE_ROW_MM,
    TWO_ROW_MM,
    TYPEFACES,
    random_crossboundary_mark,
    random_personalised_mark,
    random_standard_mark,
)

# Extra rows and columns of the grain pool, so each frame can read it at its own offset.
NOISE_PAD = 61

# How often each comes by when ClipSpec.style is "mixed" (shares of PLATE_STYLES).
STREET_MIX = (0.40, 0.32, 0.20, 0.08)
# Plate sizes, metres (width, height).
ONE_ROW_M = (ONE_ROW_MM[0] / 1000, ONE_ROW_MM[1] / 1000)
TWO_ROW_M = (TWO_ROW_MM[0] / 1000, TWO_ROW_MM[1] / 1000)
CROSSBOUNDARY_M = (CROSSBOUNDARY_MM[0] / 1000, CROSSBOUNDARY_MM[1] / 1000)
# Between the Hong Kong plate and the cross-boundary plate under it.
STACK_GAP_M = 0.01

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

# Lateral offset and distance (metres) of a plate at times t (seconds) into its pass.
Position = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


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
    # edge.synth.scenes._background draws the horizon row first, as this fraction of the
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


def _background_margin(size: tuple[int, int]) -> int:
    return max(8, round(0.02 * size[0]))
