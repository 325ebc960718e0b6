"""Dashcam-like clips made from real labelled photos, for `bench video --photos`.

Generated plates say little about the road; real photos do, but they stand still.
Here a virtual camera moves over each photo: it starts far (the plate under 40 px
wide), closes in, follows or passes the car, with the view turning (perspective),
rolling and shaking, motion blur along the motion, sensor noise and the codec's
compression. Each labelled photo gives one pass: its largest labelled plate (the
Hong Kong plate of a cross-boundary pair) is the pass, the other labelled plates in
the photo are fine to read, and ``unclear`` boxes are blurred out so that nothing
unlabelled is there to be read. The plate's box in every frame follows from the
label through the same projection that draws the frame, so the truth is exact.

The photos are split between the two cameras (alternately, in a seeded order), so
a two-camera run reads every photo once. The clips and their truth (``ClipTruth``,
the same as generated clips have) are cached by everything that shapes them.

Real photos are the yardstick: nothing here is tuned to the photos it is given.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.bench.accuracy import Label, load_labels
from edge.recognition.recognize import read_image
from edge.synth.clipspec import LEGIBLE_PX, ClipTruth, PassTruth

Box = tuple[float, float, float, float]

#: The camera's motions over a photo, and the share of passes each gets.
MOTIONS = {"approach": 0.5, "pass": 0.3, "follow": 0.2}


@dataclass(frozen=True)
class PhotoClipSpec:
    """How clips are made from a folder of labelled photos.

    ``far_px`` is the plate's width when a pass starts; ``near_frac`` its largest
    width as a share of the frame's, but never more than ``max_upscale`` times its
    width in the photo (beyond that the camera would show pixels the photo does not
    have). ``exposure`` is the shutter's share of a frame's time (motion blur),
    ``shake_px`` the hand-held jitter, ``noise`` the sensor grain's standard
    deviation in grey levels. Plates narrower than ``min_photo_px`` in the photo
    make no pass (they are still fine to read).
    """

    size: tuple[int, int] = (1920, 1080)
    fps: float = 30.0
    seed: int = 1
    pass_seconds: float = 3.0
    gap_seconds: float = 0.7
    far_px: float = 32.0
    near_frac: float = 0.16
    max_upscale: float = 2.0
    exposure: float = 0.5
    shake_px: float = 2.5
    noise: float = 3.0
    min_photo_px: float = 40.0
    legible_px: float = LEGIBLE_PX
    cameras: int = 2


@dataclass(frozen=True)
class PhotoPass:
    """One photo's pass: the plate the camera goes for and what else may be read."""

    image: Path
    target: Label
    others: tuple[Label, ...]
    unclear: tuple[Box, ...]


def plan_passes(folder: Path, spec: PhotoClipSpec) -> tuple[list[list[PhotoPass]], list[str]]:
    """The passes of each camera, and the label problems skipped (named)."""
    labelled, problems = load_labels(folder)
    passes: list[PhotoPass] = []
    for image, labels in labelled:
        readable = [lb for lb in labels if lb.category is not None]
        unclear = tuple(lb.box for lb in labels if lb.category is None)
        # The pass is the largest plate; a cross-boundary plate is read as the second
        # plate of its vehicle, so its Hong Kong plate is the pass when both are there.
        candidates = [lb for lb in readable if lb.kind != "crossboundary"] or readable
        candidates = [lb for lb in candidates if lb.box[2] - lb.box[0] >= spec.min_photo_px]
        if not candidates:
            continue
        target = max(candidates, key=lambda lb: lb.box[2] - lb.box[0])
        others = tuple(lb for lb in readable if lb is not target)
        passes.append(PhotoPass(image, target, others, unclear))
    order = np.random.default_rng(spec.seed).permutation(len(passes))
    per_camera = [[passes[i] for i in order[c :: spec.cameras]] for c in range(spec.cameras)]
    return per_camera, problems


# --- the camera's path over one photo ---------------------------------------------


@dataclass(frozen=True)
class _Path:
    """Per frame of a pass: plate width in the frame (px), plate centre in the frame,
    roll (radians) and the perspective term (turning of the view)."""

    width: np.ndarray
    centre: np.ndarray  # (n, 2)
    roll: np.ndarray
    turn: np.ndarray
    motion: str


def _camera_path(rng: np.random.Generator, n: int, peak_px: float, spec: PhotoClipSpec) -> _Path:
    w, h = spec.size
    motion = rng.choice(list(MOTIONS), p=list(MOTIONS.values()))
    t = np.linspace(0.0, 1.0, n)
    far = min(spec.far_px, peak_px * 0.8)
    start = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.45, 0.7) * h])
    if motion == "approach":
        # Distance falls linearly, so the plate grows ever faster, as when driving up.
        grow = np.clip(t / 0.8, 0.0, 1.0)
        width = 1.0 / (1.0 / far + (1.0 / peak_px - 1.0 / far) * grow)
        end = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.5, 0.75) * h])
        centre = start + (end - start) * grow[:, None]
    elif motion == "pass":
        # Grows while the car comes alongside, then slides out of the picture.
        grow = np.clip(t / 0.6, 0.0, 1.0)
        width = 1.0 / (1.0 / far + (1.0 / peak_px - 1.0 / far) * grow)
        side = rng.choice([-1.0, 1.0])
        exit_x = w / 2 + side * (w / 2 + peak_px)
        slide = np.clip((t - 0.55) / 0.45, 0.0, 1.0) ** 2
        centre = np.stack([start[0] + (exit_x - start[0]) * slide, np.full(n, start[1])], 1)
    else:  # follow: closes in to a following distance and stays, swaying a little
        grow = np.clip(t / 0.4, 0.0, 1.0)
        held = peak_px * rng.uniform(0.6, 0.9)
        width = 1.0 / (1.0 / far + (1.0 / held - 1.0 / far) * grow)
        sway = np.sin(t * math.tau * rng.uniform(0.5, 1.0)) * w * 0.05
        centre = np.stack([start[0] + sway, start[1] + sway * 0.2], 1)
    roll = np.radians(rng.uniform(-3, 3) + rng.uniform(-1, 1) * t)
    turn0, turn1 = rng.uniform(-1, 1, 2) * 1.5e-4
    turn = turn0 + (turn1 - turn0) * t
    # Hand-held shake: a smoothed random walk plus the odd jolt.
    steps = rng.normal(0, spec.shake_px, (n, 2))
    steps[rng.random(n) < 0.03] *= 4
    shake = cv2.GaussianBlur(np.cumsum(steps, 0).astype(np.float32), (1, 9), 0)
    shake -= np.linspace(0, 1, n)[:, None] * shake[-1:]  # no net drift
    return _Path(width, centre + shake, roll, turn, str(motion))


def _homography(
    plate_centre: np.ndarray, scale: float, centre: np.ndarray, roll: float, turn: float, size
) -> np.ndarray:
    """Photo pixels -> frame pixels: scale about the plate, roll, put the plate at
    ``centre``, then turn the view about the frame's centre (a perspective term)."""
    w, h = size
    to_origin = np.array([[1, 0, -plate_centre[0]], [0, 1, -plate_centre[1]], [0, 0, 1]], float)
    c, s = math.cos(roll) * scale, math.sin(roll) * scale
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)
    place = np.array([[1, 0, centre[0] - w / 2], [0, 1, centre[1] - h / 2], [0, 0, 1]], float)
    view = np.array([[1, 0, 0], [0, 1, 0], [turn, 0, 1]], float)
    to_frame = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]], float)
    return to_frame @ view @ place @ rotate @ to_origin


def _project(hom: np.ndarray, box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
    return cv2.perspectiveTransform(corners[None], hom)[0]


def _motion_blur(frame: np.ndarray, shift: np.ndarray, exposure: float) -> np.ndarray:
    length = float(np.hypot(*shift)) * exposure
    if length < 1.5:
        return frame
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), np.float32)
    half = size // 2
    direction = shift / max(np.hypot(*shift), 1e-6)
    for k in np.linspace(-length / 2, length / 2, max(2, int(length * 2))):
        x, y = half + direction[0] * k, half + direction[1] * k
        kernel[round(y), round(x)] = 1.0
    kernel /= kernel.sum()
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REPLICATE)


class _Photo:
    """A photo with its unclear boxes blurred out, and its pyramid: a far view is
    drawn from a level near its scale, as a lens would blur it, not aliased."""

    def __init__(self, image: np.ndarray, unclear: tuple[Box, ...]):
        image = image.copy()
        for x1, y1, x2, y2 in unclear:
            pad = 0.15 * (x2 - x1)
            a, b = int(max(0, x1 - pad)), int(max(0, y1 - pad))
            c, d = int(min(image.shape[1], x2 + pad)), int(min(image.shape[0], y2 + pad))
            if c > a and d > b:
                region = image[b:d, a:c]
                image[b:d, a:c] = cv2.blur(region, (max(3, (c - a) // 2) | 1,) * 2)
        self.levels = [image]
        while min(self.levels[-1].shape[:2]) > 64:
            self.levels.append(cv2.pyrDown(self.levels[-1]))

    def draw(self, hom: np.ndarray, scale: float, size) -> np.ndarray:
        level = 0
        while level + 1 < len(self.levels) and scale * 2 ** (level + 1) <= 1.0:
            level += 1
        factor = 2.0**level
        shrink = np.diag([factor, factor, 1.0])
        return cv2.warpPerspective(
            self.levels[level],
            hom @ shrink,
            size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


class _Grain:
    """Sensor noise: one pool per camera, read at a random offset each frame (drawing
    fresh normal noise for every 1080p frame would cost more than the rest of it)."""

    PAD = 61

    def __init__(self, spec: PhotoClipSpec, rng: np.random.Generator):
        w, h = spec.size
        self.size = spec.size
        self.rng = rng
        self.pool = (
            np.round(rng.normal(0.0, spec.noise, (h + self.PAD, w + self.PAD, 3))).astype(np.int16)
            if spec.noise > 0
            else None
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.pool is None:
            return frame
        w, h = self.size
        oy, ox = self.rng.integers(0, self.PAD, 2)
        return cv2.add(frame, self.pool[oy : oy + h, ox : ox + w], dtype=cv2.CV_8U)


def _pass_frames(
    photo_pass: PhotoPass,
    spec: PhotoClipSpec,
    rng: np.random.Generator,
    grain: _Grain,
    first_frame: int,
):
    """Yield the frames of one pass; returns its PassTruth (via StopIteration.value)."""
    image = read_image(photo_pass.image)
    photo = _Photo(image, photo_pass.unclear)
    target = photo_pass.target
    photo_w = target.box[2] - target.box[0]
    n = max(2, round(spec.pass_seconds * spec.fps))
    peak = min(spec.near_frac * spec.size[0], spec.max_upscale * photo_w)
    path = _camera_path(rng, n, peak, spec)
    plate_centre = np.array(
        [(target.box[0] + target.box[2]) / 2, (target.box[1] + target.box[3]) / 2]
    )
    w, h = spec.size
    boxes: list[Box] = []
    legible: list[int] = []
    previous = None
    for k in range(n):
        scale = float(path.width[k]) / photo_w
        hom = _homography(
            plate_centre, scale, path.centre[k], path.roll[k], path.turn[k], spec.size
        )
        frame = photo.draw(hom, scale, spec.size)
        corners = _project(hom, target.box)
        if previous is not None:
            frame = _motion_blur(frame, corners.mean(0) - previous, spec.exposure)
        previous = corners.mean(0)
        frame = grain(frame)
        low, high = corners.min(0), corners.max(0)
        box = (
            float(np.clip(low[0], 0, w)),
            float(np.clip(low[1], 0, h)),
            float(np.clip(high[0], 0, w)),
            float(np.clip(high[1], 0, h)),
        )
        boxes.append(box)
        inside = low[0] >= 0 and low[1] >= 0 and high[0] <= w and high[1] <= h
        if inside and high[0] - low[0] >= spec.legible_px:
            legible.append(first_frame + k)
        yield frame
    # Frames where the plate is wholly out of the picture end the pass's truth early.
    seen = [i for i, b in enumerate(boxes) if b[2] > b[0] and b[3] > b[1]]
    last = seen[-1] if seen else 0
    return PassTruth(
        text=target.plate,
        style=target.category or "one-row",
        kind=path.motion,
        first_frame=first_frame,
        last_frame=first_frame + last,
        first_legible_frame=legible[0] if legible else None,
        last_legible_frame=legible[-1] if legible else None,
        boxes=tuple(boxes[: last + 1]),
    )


def _gap_frame(spec: PhotoClipSpec, grain: _Grain) -> np.ndarray:
    """Between passes: a featureless grey road, so one pass's track ends before the next."""
    w, h = spec.size
    return grain(np.full((h, w, 3), 110, np.uint8))


def render_camera(
    passes: list[PhotoPass], spec: PhotoClipSpec, path: Path, camera: int, folder: Path
) -> ClipTruth:
    """Write one camera's clip (mp4v) and its truth (``.json`` beside it)."""
    rng = np.random.default_rng([spec.seed, camera])
    grain = _Grain(spec, rng)
    w, h = spec.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), spec.fps, (w, h))
    if not writer.isOpened():
        raise ValueError(f"cannot write mp4v video to {path}")
    truths: list[PassTruth] = []
    fine: set[str] = set()
    frame_no = 0
    gap = max(1, round(spec.gap_seconds * spec.fps))
    try:
        for photo_pass in passes:
            frames = _pass_frames(photo_pass, spec, rng, grain, frame_no)
            while True:
                try:
                    writer.write(next(frames))
                    frame_no += 1
                except StopIteration as done:
                    truths.append(done.value)
                    break
            fine.update(lb.plate for lb in photo_pass.others)
            for _ in range(gap):
                writer.write(_gap_frame(spec, grain))
                frame_no += 1
    finally:
        writer.release()
    truth = ClipTruth(
        size=spec.size,
        fps=spec.fps,
        frame_count=frame_no,
        legible_px=spec.legible_px,
        passes=tuple(truths),
        spec=None,
        source={
            "photos": str(folder),
            "camera": camera,
            "images": [p.image.name for p in passes],
            "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
        },
        fine_to_read=tuple(sorted(fine - {t.text for t in truths})),
    )
    path.with_suffix(".json").write_text(truth.to_json())
    return truth


def photo_clips(
    folder: Path, spec: PhotoClipSpec, cache: Path
) -> tuple[list[tuple[Path, ClipTruth]], list[str]]:
    """One clip per camera from ``folder``'s labelled photos, rendered once per
    (photos, labels, spec) and then reused from ``cache``; and the label problems
    skipped."""
    per_camera, problems = plan_passes(folder, spec)
    if not any(per_camera):
        raise ValueError(f"{folder}: no labelled plate of {spec.min_photo_px:g} px or wider")
    digest = hashlib.sha256(json.dumps(asdict(spec), default=str).encode())
    digest.update(Path(__file__).read_bytes())  # a changed renderer draws new clips
    for passes in per_camera:
        for p in passes:
            stat = p.image.stat()
            digest.update(f"{p.image.name}:{stat.st_size}:{p.target}:{p.others}".encode())
    key = digest.hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for camera, passes in enumerate(per_camera):
        path = cache / f"photos-{folder.name}-{key}-cam{camera}.mp4"
        if path.exists() and path.with_suffix(".json").exists():
            truth = ClipTruth.load(path)
        else:
            partial = path.with_name(path.stem + ".partial.mp4")
            truth = render_camera(passes, spec, partial, camera, folder)
            partial.with_suffix(".json").replace(path.with_suffix(".json"))
            partial.replace(path)
        clips.append((path, truth))
    return clips, problems
