"""Synthetic Hong Kong plates and road scenes, so tests and the demo need no outside data.

Everything is a pure function of its arguments and a numpy ``Generator``: the same
seed gives the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

# HK marks never use I, O or Q (they read as 1 and 0).
HK_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
PLATE_MM = (520, 110)
PLATE_COLOURS = {"front": (242, 242, 242), "rear": (0, 200, 255)}  # BGR: white, HK yellow
INK = (20, 20, 20)
CAR_COLOURS = (
    (235, 235, 235),  # white
    (190, 190, 185),  # silver
    (40, 40, 40),  # black
    (110, 110, 110),  # grey
    (40, 40, 170),  # red
    (140, 80, 30),  # blue
    (60, 90, 40),  # dark green
)
# Standard deviation of a uniform 0..255 byte, to scale grain to a requested spread.
UNIFORM_BYTE_STD = 256 / 12**0.5
Style = Literal["front", "rear"]
Box = tuple[float, float, float, float]


def random_hk_plate(rng: np.random.Generator) -> str:
    """A valid HK standard mark without the space: 1-2 letters, 1-4 digits, no leading 0."""
    letters = "".join(rng.choice(list(HK_LETTERS), size=int(rng.integers(1, 3))))
    n_digits = int(rng.integers(1, 5))
    number = int(rng.integers(10 ** (n_digits - 1), 10**n_digits))
    return f"{letters}{number}"


def plate_display_text(text: str) -> str:
    """``AB1234`` -> ``AB 1234``: the gap HK plates show between letters and digits."""
    text = text.strip().upper()
    if " " in text:
        return text
    split = len(text) - len(text.lstrip(HK_LETTERS + "IOQ"))
    return f"{text[:split]} {text[split:]}" if 0 < split < len(text) else text


def _text_mask(text: str, height: int, max_width: int) -> np.ndarray:
    """Anti-aliased ink coverage (0..1) of ``text`` exactly ``height`` pixels tall."""
    font, scale = cv2.FONT_HERSHEY_DUPLEX, 4.0
    # About a seventh of the cap height: bold like a plate font, yet 8/B/6 keep holes.
    thickness = 13
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    margin = thickness
    canvas = np.zeros((th + base + 2 * margin, tw + 2 * margin), np.uint8)
    cv2.putText(canvas, text, (margin, margin + th), font, scale, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas)
    ink = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    # Plate fonts are condensed; squeeze the Hershey glyphs rather than shrink them.
    natural = ink.shape[1] * height / ink.shape[0]
    width = max(1, min(max_width, round(natural * 0.85)))
    return cv2.resize(ink, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def render_plate(text: str, *, style: Style = "front", width: int = 520) -> np.ndarray:
    """A flat HK plate (BGR uint8), ``width`` pixels wide at 520x110 mm proportions.

    White for front plates, yellow for rear ones; black bold characters filling about
    70% of the height and a thin black border. ``AB1234`` is drawn as ``AB 1234``.
    """
    if style not in PLATE_COLOURS:
        raise ValueError(f"style must be 'front' or 'rear', got {style!r}")
    if width < 40:
        raise ValueError(f"plate width {width} is too small to draw")
    height = max(9, round(width * PLATE_MM[1] / PLATE_MM[0]))
    plate = np.empty((height, width, 3), np.float32)
    plate[:] = PLATE_COLOURS[style]
    label = plate_display_text(text)
    if label:
        mask = _text_mask(label, round(height * 0.7), round(width * 0.9))
        y0 = (height - mask.shape[0]) // 2
        x0 = (width - mask.shape[1]) // 2
        region = plate[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        alpha = mask[:, :, None]
        region[:] = region * (1 - alpha) + np.array(INK, np.float32) * alpha
    out = plate.astype(np.uint8)
    border = max(1, round(height / 40))
    inset = border + max(1, round(height / 30))
    cv2.rectangle(out, (inset, inset), (width - 1 - inset, height - 1 - inset), INK, border)
    return out


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    horizon = int(h * rng.uniform(0.25, 0.45))
    # Vertical gradients only, so one column is computed and broadcast across.
    column = np.empty((h, 1, 3), np.float64)
    sky_top = rng.uniform([150, 120, 90], [235, 210, 190])
    sky_bottom = sky_top * rng.uniform(0.8, 1.0)
    t = np.linspace(0, 1, horizon)[:, None, None]
    column[:horizon] = sky_top * (1 - t) + sky_bottom * t
    road = rng.uniform(70, 120)
    t = np.linspace(0, 1, h - horizon)[:, None, None]
    column[horizon:] = road * (0.85 + 0.3 * t) + rng.uniform(-6, 6, 3)
    out = np.ascontiguousarray(np.broadcast_to(column.astype(np.uint8), (h, w, 3)))

    # Buildings, poles and signs along the horizon; lane markings on the road.
    for _ in range(int(rng.integers(4, 10))):
        bw, bh = int(rng.uniform(0.05, 0.2) * w), int(rng.uniform(0.1, 0.35) * h)
        x = int(rng.integers(0, w))
        grey = rng.uniform(60, 200)
        colour = tuple(float(c) for c in grey * rng.uniform(0.85, 1.15, 3))
        cv2.rectangle(out, (x, horizon - bh), (x + bw, horizon), colour, -1)
    for _ in range(int(rng.integers(2, 6))):
        x = int(rng.integers(0, w))
        cv2.line(out, (x, int(horizon * rng.uniform(0.1, 0.6))), (x, horizon), (50, 50, 50), 3)
    vanish = (w // 2 + int(rng.integers(-w // 8, w // 8)), horizon)
    for frac in (-0.6, 0.0, 0.6):
        cv2.line(out, vanish, (int(w / 2 + frac * w * 1.2), h), (200, 200, 200), 4, cv2.LINE_AA)
    return out


def _shade(colour: tuple[float, ...], k: float) -> tuple[float, ...]:
    return tuple(float(min(255.0, c * k)) for c in colour)


def _scaled_quad(corners: np.ndarray, kx: float, ky: float) -> np.ndarray:
    """The plate quadrilateral grown about its centre (kx along, ky across)."""
    centre = corners.mean(axis=0)
    return (centre + (corners - centre) * [kx, ky]).round().astype(np.int32)


def _draw_car(img: np.ndarray, corners: np.ndarray, rng: np.random.Generator) -> None:
    """The back of a car around a plate at ``corners``.

    The detector barely fires on a plate floating on a flat blob: it looks for the
    surroundings of a real plate. The plate holder and the recess around it, the
    bumper below and the lights and trunk above are what lift its score.
    """
    x1, y1 = corners.min(axis=0)
    x2, y2 = corners.max(axis=0)
    colour = draw_car_body(img, (x1 + x2) / 2, y1, y2, x2 - x1, y2 - y1, rng)
    cv2.fillConvexPoly(img, _scaled_quad(corners, 1.16, 1.55), _shade(colour, 0.55), cv2.LINE_AA)
    cv2.fillConvexPoly(img, _scaled_quad(corners, 1.04, 1.16), (20, 20, 20), cv2.LINE_AA)


def draw_car_body(
    img: np.ndarray,
    cx: float,
    top: float,
    bottom: float,
    pw: float,
    ph: float,
    rng: np.random.Generator,
) -> tuple[float, ...]:
    """The back of a car whose plate mount spans ``top`` to ``bottom`` (px) around
    ``cx``, sized in units of a plate ``pw`` x ``ph`` px: shadow, tyres, cabin, glass,
    body, trunk, lights, badge and bumper. Returns the body's colour (BGR)."""
    y1, y2 = top, bottom
    body_w = pw * rng.uniform(3.4, 4.2)
    left, right = int(cx - body_w / 2), int(cx + body_w / 2)
    roof = y1 - ph * rng.uniform(6.0, 7.5)
    shoulder = y1 - ph * rng.uniform(2.6, 3.2)
    bottom = y2 + ph * rng.uniform(1.4, 2.0)
    base = np.array(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], np.float64)
    colour = tuple(float(c) for c in np.clip(base * rng.uniform(0.85, 1.1), 0, 255))
    line = max(1, round(ph * 0.07))

    # Shadow on the road, then tyres peeping out under the body.
    axes = (int(body_w * 0.55), int(ph * 0.9))
    cv2.ellipse(img, (int(cx), int(bottom + ph * 0.6)), axes, 0, 0, 360, (25, 25, 25), -1)
    for side in (-1, 1):
        tx = int(cx + side * body_w * 0.36)
        tyre = (
            (tx - int(pw * 0.35), int(bottom - ph * 0.5)),
            (tx + int(pw * 0.35), int(bottom + ph * 0.9)),
        )
        cv2.rectangle(img, *tyre, (18, 18, 18), -1)

    cabin_w = body_w * 0.78
    cabin = [(-0.5, shoulder), (-0.36, roof), (0.36, roof), (0.5, shoulder)]
    cabin_pts = np.array([[cx + f * cabin_w, y] for f, y in cabin], np.int32)
    cv2.fillConvexPoly(img, cabin_pts, _shade(colour, 0.95), cv2.LINE_AA)
    glass = [(-0.44, shoulder - ph * 0.3), (-0.33, roof + ph * 0.5)]
    glass += [(0.33, roof + ph * 0.5), (0.44, shoulder - ph * 0.3)]
    glass_pts = np.array([[cx + f * cabin_w, y] for f, y in glass], np.int32)
    cv2.fillConvexPoly(img, glass_pts, (60, 50, 45), cv2.LINE_AA)
    wiper_end = (int(cx - cabin_w * 0.1), int(shoulder - ph * 0.3))
    cv2.line(img, tuple(map(int, glass_pts[1])), wiper_end, (110, 105, 100), line * 2, cv2.LINE_AA)

    # Bands of falling brightness stand in for the body's curvature.
    bands = 6
    for b in range(bands):
        ya = int(shoulder + (bottom - shoulder) * b / bands)
        yb = int(shoulder + (bottom - shoulder) * (b + 1) / bands) + 1
        cv2.rectangle(img, (left, ya), (right, yb), _shade(colour, 1.08 - 0.06 * b), -1)
    trunk_y = int(y1 - ph * 1.2)
    trunk = ((left + int(pw * 0.3), trunk_y), (right - int(pw * 0.3), trunk_y))
    cv2.line(img, *trunk, _shade(colour, 0.6), line, cv2.LINE_AA)
    for side in (-1, 1):
        lx = cx + side * body_w * 0.38
        a = (int(lx - pw * 0.3), int(y1 - ph * 2.4))
        b = (int(lx + pw * 0.3), int(y1 - ph * 1.4))
        cv2.rectangle(img, a, b, (20, 20, 150), -1)
        inner = (
            (a[0] + int(pw * 0.06), a[1] + int(ph * 0.2)),
            (b[0] - int(pw * 0.06), b[1] - int(ph * 0.2)),
        )
        cv2.rectangle(img, *inner, (60, 60, 230), -1)
    badge_axes = (int(pw * 0.12), int(ph * 0.25))
    cv2.ellipse(
        img, (int(cx), int(y1 - ph * 1.8)), badge_axes, 0, 0, 360, (200, 200, 200), -1, cv2.LINE_AA
    )

    bumper_y = int(y2 + ph * 0.6)
    bumper = ((left - int(pw * 0.05), bumper_y), (right + int(pw * 0.05), int(bottom)))
    cv2.rectangle(img, *bumper, _shade(colour, 0.8), -1)
    cv2.line(img, (left, bumper_y), (right, bumper_y), _shade(colour, 1.25), line, cv2.LINE_AA)
    diffuser = (
        (left + int(pw * 0.5), int(bottom - ph * 0.35)),
        (right - int(pw * 0.5), int(bottom)),
    )
    cv2.rectangle(img, *diffuser, (30, 30, 30), -1)
    return colour


def _paste_warped(img: np.ndarray, plate: np.ndarray, corners: np.ndarray) -> None:
    """Warp ``plate`` onto the quadrilateral ``corners`` (4x2, clockwise from top left)."""
    h, w = plate.shape[:2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    local = (corners - [x0, y0]).astype(np.float32)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    matrix = cv2.getPerspectiveTransform(src, local)
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpPerspective(plate, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32)[:, :, None] / 255
    region = img[y0:y1, x0:x1]
    region[:] = (region * (1 - alpha) + warped * alpha).astype(np.uint8)


def render_scene(
    plate_texts: Sequence[str],
    *,
    size: tuple[int, int] = (1280, 720),
    rng: np.random.Generator,
    perspective: bool = True,
    blur: float = 0.6,
    noise: float = 3.0,
    plate_frac: tuple[float, float] = (0.08, 0.20),
    styles: Sequence[Style] | None = None,
) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """A road-like BGR scene ``size`` = (width, height) with one car and plate per text.

    Plates are ``plate_frac`` of the frame width, mildly perspective-warped, side by
    side without overlapping. ``blur`` is a Gaussian sigma in pixels and ``noise`` the
    standard deviation of uniform per-pixel grain in grey levels (0 turns either
    off). Returns the image and, per text, its ground-truth plate box (x1, y1, x2, y2)
    in image pixels.
    """
    w, h = size
    if styles is not None and len(styles) != len(plate_texts):
        raise ValueError("styles must give one style per plate text")
    img = _background((w, h), rng)
    n = len(plate_texts)
    placed: list[tuple[str, Box, np.ndarray]] = []
    col_w = w / max(n, 1)
    for i, text in enumerate(plate_texts):
        # A car is up to 4.2 plate widths wide: cap the plate so neighbouring cars
        # never cover each other's plates.
        pw = rng.uniform(*plate_frac) * w
        if n > 1:
            pw = min(pw, col_w / 4.2)
        ph = pw * PLATE_MM[1] / PLATE_MM[0]
        cx = col_w * (i + 0.5) + rng.uniform(-0.1, 0.1) * col_w
        # Room for the car's roof above the plate and its bumper below.
        low, high = max(0.55 * h, 7.8 * ph), 0.9 * h - 2 * ph
        cy = rng.uniform(min(low, high), high)
        rect = np.float64(
            [[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]]
        )
        if perspective:
            angle = np.deg2rad(rng.uniform(-4, 4))
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            rect = rect @ rot.T
            # Viewed from off-axis: the far side of the plate is a little shorter.
            squeeze = rng.uniform(-0.08, 0.08)
            rect[[1, 2], 1] *= 1 - squeeze
            rect[[0, 3], 1] *= 1 + squeeze
            rect += rng.uniform(-0.03, 0.03, (4, 2)) * [pw, ph]
        corners = rect + np.array([cx, cy])
        corners[:, 0] = corners[:, 0].clip(1, w - 2)
        corners[:, 1] = corners[:, 1].clip(1, h - 2)
        box = tuple(float(v) for v in (*corners.min(axis=0), *corners.max(axis=0)))
        _draw_car(img, corners, rng)
        placed.append((text, box, corners))

    truths: list[tuple[str, Box]] = []
    for i, (text, box, corners) in enumerate(placed):
        style = styles[i] if styles is not None else ("front", "rear")[int(rng.integers(2))]
        plate = render_plate(text, style=style, width=max(40, round(box[2] - box[0])))
        _paste_warped(img, plate, corners)
        truths.append((text, box))

    return blur_and_grain(img, blur, noise, rng), truths


def blur_and_grain(
    img: np.ndarray, blur: float, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """``img`` as a camera sees it: Gaussian blur of sigma ``blur`` px, then uniform
    per-pixel grain of standard deviation ``noise`` grey levels (0 turns either off)."""
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if noise > 0:
        # Uniform rather than Gaussian grain: same spread for the detector at a tenth
        # of the cost, which keeps a 720p scene well under the 50 ms budget.
        grain = rng.integers(0, 256, img.shape, dtype=np.uint8)
        k = noise / UNIFORM_BYTE_STD
        img = cv2.addWeighted(img, 1.0, grain, k, -127.5 * k, dtype=cv2.CV_8U)
    return img
