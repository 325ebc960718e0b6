"""Generated Hong Kong plates that look like real ones: TrueType plate-like typefaces,
one- and two-row layouts, cross-boundary plates and the wear and light of the street.

For tests and training only; accuracy figures come from real photos. Everything is a
pure function of its arguments and a numpy ``Generator``: the same seed gives the same
pixels on the same Pillow, OpenCV, numpy and font package versions. ``edge.synth.scenes`` stays
as it is because the INT8 detector's calibration depends on its exact pixels.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.crossboundary import PROVINCE, REGIONS
from edge.synth.scenes import HK_LETTERS, _background, _paste_warped, blur_and_grain, draw_car_body

Style = Literal["front", "rear", "crossboundary"]
Kind = Literal["hk", "crossboundary"]
Box = tuple[float, float, float, float]

# Debian's locations; a font found nowhere names the package that ships it.
FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/truetype/wqy"),
    Path("/usr/local/share/fonts"),
)
FONTS: dict[str, tuple[str, str]] = {
    "dejavu-condensed-bold": ("DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-extra"),
    "dejavu-bold": ("DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    "dejavu-mono-bold": ("DejaVuSansMono-Bold.ttf", "fonts-dejavu-core"),
    "wqy-zenhei": ("wqy-zenhei.ttc", "fonts-wqy-zenhei"),
}
CJK_FONT = "wqy-zenhei"


class FontMissingError(FileNotFoundError):
    """A font file the plates need is not installed."""


@dataclass(frozen=True)
class Typeface:
    """A font and how far its look is varied: horizontal scale of the glyphs, stroke
    weight change (fraction of the character height, + bolder) and gap between
    characters (fraction of the character height). ``None`` rng takes the middles."""

    font: str
    hscale: tuple[float, float]
    weight: tuple[float, float]
    tracking: tuple[float, float]
    # Characters drawn from another font: plate zeros are plain ovals, not dotted.
    borrow: tuple[str, str] = ("", "")


# Real plates come from several makers, so no single font is right. A bold condensed
# sans is closest to the UK "Charles Wright" face HK plates use; the others are wider
# fonts squeezed to plate proportions.
TYPEFACES: dict[str, Typeface] = {
    "condensed": Typeface("dejavu-condensed-bold", (0.86, 1.0), (0.0, 0.035), (0.10, 0.17)),
    "sans": Typeface("dejavu-bold", (0.72, 0.84), (-0.01, 0.025), (0.08, 0.15)),
    "mono": Typeface(
        "dejavu-mono-bold", (0.80, 0.95), (0.0, 0.03), (0.04, 0.10), ("0", "dejavu-bold")
    ),
}
DEFAULT_TYPEFACE = "condensed"

# Plate sizes in mm (width, height).
ONE_ROW_MM = (520, 110)
TWO_ROW_MM = (330, 165)
CROSSBOUNDARY_MM = (440, 140)
# Standard HK marks without I, O or Q; personalised marks are up to 8 characters.
_STANDARD = re.compile(r"^([A-Z]{1,2})([0-9]{1,4})$")
MAX_MARK = 8
# Base colours, BGR; plates vary around them.
WHITE = (242, 242, 242)
YELLOW = (0, 200, 255)
BLACK_PLATE = (22, 22, 22)
INK = (20, 20, 20)
WHITE_INK = (238, 238, 238)

# Glyphs are drawn once this size in pixels (em) and scaled down, so strokes can be
# thickened and thinned in whole pixels at any plate size.
_GLYPH_EM = 192


def font_path(name: str) -> Path:
    """The installed file of font ``name`` (a key of :data:`FONTS`)."""
    filename, package = FONTS[name]
    for folder in FONT_DIRS:
        path = folder / filename
        if path.is_file():
            return path
    raise FontMissingError(
        f"font {filename} is missing: install the Debian package {package} "
        f"(sudo apt-get install {package}, or run 'make system-deps'); looked in "
        + ", ".join(str(d) for d in FONT_DIRS)
    )


@functools.lru_cache(maxsize=8)
def _font(name: str):
    from PIL import ImageFont

    # The basic layout engine: raqm is not on every system and shapes differently.
    return ImageFont.truetype(str(font_path(name)), _GLYPH_EM, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=2048)
def _glyph(font: str, char: str, weight_px: int) -> np.ndarray:
    """Ink of one character cropped to its bounding box, uint8, about _GLYPH_EM tall."""
    from PIL import Image, ImageDraw

    face = _font(font)
    left, top, right, bottom = face.getbbox(char)
    pad = 4 + abs(weight_px)
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=face, fill=255)
    ink = np.asarray(canvas)
    if weight_px:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(weight_px) + 1,) * 2)
        ink = (cv2.dilate if weight_px > 0 else cv2.erode)(ink, kernel)
    ys, xs = np.nonzero(ink > 8)
    if not len(ys):
        raise ValueError(f"font {font} has no glyph for {char!r}")
    out = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy()
    out.flags.writeable = False
    return out


def _pick(span: tuple[float, float], rng: np.random.Generator | None) -> float:
    return (span[0] + span[1]) / 2 if rng is None else float(rng.uniform(*span))


def _is_cjk(char: str) -> bool:
    return ord(char) >= 0x2E80


def _row_mask(
    text: str,
    char_h: int,
    face: Typeface,
    *,
    hscale: float,
    weight: float,
    tracking: float,
    gap: float,
    cjk_scale: float = 0.92,
) -> np.ndarray:
    """Float ink coverage (0..1) of one row, ``char_h`` tall; spaces are ``gap`` wide
    (fraction of ``char_h``) and a "·" is a small dot, as on mainland plates."""
    weight_px = round(weight * _GLYPH_EM * 0.73)
    pieces: list[tuple[np.ndarray, int]] = []  # (mask, top offset)
    for char in text:
        if char == " ":
            pieces.append((np.zeros((char_h, max(1, round(gap * char_h))), np.float32), 0))
            continue
        if char == "·":
            d = max(2, round(char_h * 0.14))
            dot = np.zeros((d, d), np.uint8)
            cv2.circle(dot, (d // 2, d // 2), d // 2, 255, -1, cv2.LINE_AA)
            pieces.append((dot.astype(np.float32) / 255, (char_h - d) // 2))
            continue
        if _is_cjk(char):
            glyph = _glyph(CJK_FONT, char, max(0, weight_px // 2))
            h = max(2, round(char_h * cjk_scale))
            # Mainland plates squeeze the Chinese characters to the Latin cell width.
            w = max(1, round(glyph.shape[1] * h / glyph.shape[0] * 0.72))
        else:
            font = face.borrow[1] if char in face.borrow[0] else face.font
            glyph = _glyph(font, char, weight_px)
            h = char_h
            w = max(1, round(glyph.shape[1] * h / glyph.shape[0] * hscale))
        resized = cv2.resize(glyph, (w, h), interpolation=cv2.INTER_AREA)
        pieces.append((resized.astype(np.float32) / 255, (char_h - h) // 2))
    if not pieces:
        return np.zeros((char_h, 1), np.float32)
    space = max(1, round(tracking * char_h))
    width = sum(p.shape[1] for p, _ in pieces) + space * (len(pieces) - 1)
    row = np.zeros((char_h, width), np.float32)
    x = 0
    for piece, top in pieces:
        row[top : top + piece.shape[0], x : x + piece.shape[1]] = piece
        x += piece.shape[1] + space
    return row


def hk_rows(text: str, rows: int) -> list[str]:
    """The rows a mark is drawn in. A space in ``text`` is where the gap (one row) or
    the row break (two rows) goes; without one a standard mark splits between letters
    and digits and a personalised mark in the middle."""
    text = " ".join(text.upper().split())
    if rows == 1:
        match = _STANDARD.match(text)
        return [f"{match[1]} {match[2]}" if match else text]
    if " " in text:
        top, bottom = text.split(" ", 1)
        return [top, bottom.replace(" ", "")]
    match = _STANDARD.match(text)
    if match:
        return [match[1], match[2]]
    half = (len(text) + 1) // 2
    return [text[:half], text[half:]]


def plate_size(style: Style, rows: int, width: int) -> tuple[int, int]:
    """(width, height) in pixels of a plate ``width`` pixels wide."""
    mm = CROSSBOUNDARY_MM if style == "crossboundary" else (TWO_ROW_MM if rows == 2 else ONE_ROW_MM)
    return width, max(12, round(width * mm[1] / mm[0]))


def _plate_colours(style: Style, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    base = {"front": WHITE, "rear": YELLOW, "crossboundary": BLACK_PLATE}[style]
    ink = WHITE_INK if style == "crossboundary" else INK
    bg, fg = np.array(base, np.float32), np.array(ink, np.float32)
    if rng is not None:
        if style == "rear":
            bg = np.array(
                [rng.uniform(0, 45), rng.uniform(180, 218), rng.uniform(232, 255)], np.float32
            )
        else:
            bg = bg + rng.uniform(-14, 8) + rng.uniform(-4, 4, 3)
        fg = fg + rng.uniform(-10, 10) + rng.uniform(-3, 3, 3)
    return np.clip(bg, 0, 255), np.clip(fg, 0, 255)


def _screws(plate: np.ndarray, spots: list[tuple[int, int]], r: int, rng) -> None:
    metal = float(rng.uniform(120, 200)) if rng is not None else 170.0
    for x, y in spots:
        cv2.circle(plate, (x, y), r + max(1, r // 3), (40, 40, 40), -1, cv2.LINE_AA)
        cv2.circle(plate, (x, y), r, (metal,) * 3, -1, cv2.LINE_AA)
        cv2.circle(plate, (x - r // 3, y - r // 3), max(1, r // 3), (235,) * 3, -1, cv2.LINE_AA)
        slot = max(1, r // 4)
        cv2.line(plate, (x - r + 1, y), (x + r - 1, y), (50, 50, 50), slot, cv2.LINE_AA)


def _frame(plate: np.ndarray, rng: np.random.Generator) -> None:
    """A dealer's plastic surround over the plate edges, its name in the bottom band."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = plate.shape[:2]
    colour = (
        tuple(float(c) for c in rng.uniform(15, 45, 3))
        if rng.random() < 0.7
        else (float(rng.uniform(150, 200)),) * 3
    )
    side, top, bottom = (max(2, round(h * k)) for k in (0.05, 0.06, rng.uniform(0.08, 0.12)))
    cv2.rectangle(plate, (0, 0), (w - 1, top), colour, -1)
    cv2.rectangle(plate, (0, h - 1 - bottom), (w - 1, h - 1), colour, -1)
    cv2.rectangle(plate, (0, 0), (side, h - 1), colour, -1)
    cv2.rectangle(plate, (w - 1 - side, 0), (w - 1, h - 1), colour, -1)
    name = ("AUTO CITY", "KOWLOON MOTORS", "WING ON CARS", "HK AUTO", "TAI PO MOTOR")[
        int(rng.integers(5))
    ]
    size = max(6, round(bottom * 0.8))
    face = ImageFont.truetype(
        str(font_path("dejavu-bold")), size, layout_engine=ImageFont.Layout.BASIC
    )
    canvas = Image.new("L", (w, bottom + 2), 0)
    tw = face.getlength(name)
    ImageDraw.Draw(canvas).text(((w - tw) / 2, 0), name, font=face, fill=255)
    alpha = np.asarray(canvas, np.float32)[: bottom + 1, :, None] / 255 * 0.8
    text_colour = np.array([225.0] * 3 if colour[0] < 100 else [40.0] * 3, np.float32)
    region = plate[h - 1 - bottom :, :]
    region[:] = region * (1 - alpha[: region.shape[0]]) + text_colour * alpha[: region.shape[0]]


def _dirt(plate: np.ndarray, amount: float, rng: np.random.Generator) -> None:
    """Brown road grime: soft blotches, heavier along the bottom edge."""
    h, w = plate.shape[:2]
    stain = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.uniform(0.03, 0.2) * w), int(rng.uniform(0.1, 0.5) * h))
        cv2.ellipse(stain, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    stain += np.linspace(0, 1, h, dtype=np.float32)[:, None] ** 3
    stain = cv2.GaussianBlur(stain, (0, 0), max(1.0, h / 10))
    speckle = rng.random((h, w), dtype=np.float32) < 0.01 * amount
    stain = np.clip(stain * rng.uniform(0.3, 0.6) + speckle, 0, 1) * amount
    grime = np.array(rng.uniform([30, 50, 60], [70, 90, 110]), np.float32)
    plate[:] = plate * (1 - stain[:, :, None] * 0.7) + grime * stain[:, :, None] * 0.7


def _lighting(plate: np.ndarray, amount: float, rng: np.random.Generator) -> None:
    """Light falling across the plate: a tilted gradient and a soft bright spot."""
    h, w = plate.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs / w - 0.5) + np.sin(angle) * (ys / h - 0.5)) * 2
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    spot = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (0.3 * w) ** 2))
    gain = 1 + amount * (0.35 * ramp + 0.25 * spot - 0.1)
    plate *= np.clip(gain, 0.2, 1.6)[:, :, None]


def _night(img: np.ndarray, rng: np.random.Generator, glare: int = 1) -> np.ndarray:
    """Short exposure after dark: dim, noisy, with headlight glare blooming in."""
    h, w = img.shape[:2]
    out = img.astype(np.float32) * rng.uniform(0.22, 0.4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(glare):
        cx, cy = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        r = rng.uniform(0.06, 0.25) * max(w, h)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r**2))
        core = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (r / 6) ** 2))
        tint = np.array([rng.uniform(200, 255), rng.uniform(220, 255), 255], np.float32)
        out += (blob * 0.6 + core)[:, :, None] * tint * rng.uniform(0.5, 1.0)
    out += rng.normal(0, rng.uniform(5, 12), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _warp(img: np.ndarray, perspective: float, rotation: float, rng, fill) -> np.ndarray:
    """The plate seen off-axis and tilted, shrunk a little so its corners stay inside."""
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    centre = src.mean(axis=0)
    pts = (src - centre) * (1 - perspective)
    if perspective:
        squeeze = rng.uniform(-1, 1) * perspective
        pts[[1, 2], 1] *= 1 - squeeze
        pts[[0, 3], 1] *= 1 + squeeze
        pts += rng.uniform(-0.5, 0.5, (4, 2)) * perspective * [w, h] * 0.3
    a = np.deg2rad(rotation)
    pts = pts @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]], np.float32)
    # Rotation grows the bounding box; shrink to fit rather than clip a corner.
    span = np.ptp(pts, axis=0)
    pts *= min(1.0, (w - 2) / span[0], (h - 2) / span[1])
    matrix = cv2.getPerspectiveTransform(src, (pts + centre).astype(np.float32))
    return cv2.warpPerspective(
        img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )  # fmt: skip


def render_hk_plate(
    text: str,
    *,
    rows: int = 1,
    style: Style = "front",
    typeface: str = DEFAULT_TYPEFACE,
    width: int = 520,
    rng: np.random.Generator | None = None,
    screws: bool = False,
    frame: bool = False,
    dirt: float = 0.0,
    lighting: float = 0.0,
    blur: float = 0.0,
    jpeg: int | None = None,
    perspective: float = 0.0,
    rotation: float = 0.0,
    night: bool = False,
) -> np.ndarray:
    """A Hong Kong plate (BGR uint8) ``width`` pixels wide, drawn as real plates are.

    ``style``: "front" (white), "rear" (yellow) or "crossboundary" (white characters on
    black, e.g. "粤Z1234港", one row, meant to hang under the HK plate). ``rows`` 2 puts
    letters above digits on a 330x165 mm plate (see :func:`hk_rows`); one row is
    520x110 mm. Characters are drawn as given: HK marks have no I, O or Q, so "L0VEBB"
    shows the 0 that looks like an O on the street.

    ``rng`` varies colours, typeface weight, spacing and proportions a little, as real
    plates from different makers do; ``None`` draws the nominal plate. The rest add
    wear and camera effects: ``screws`` (bolt heads), ``frame`` (dealer surround),
    ``dirt`` and ``lighting`` (0..1), ``blur`` (Gaussian sigma, px), ``jpeg`` (quality),
    ``perspective`` (0..0.2) and ``rotation`` (degrees, about the centre, plate shrunk to
    stay whole, dark surround behind), ``night`` (dim, noisy, glare). Those that need
    randomness use ``rng``, or a fixed seed when it is ``None``.
    """
    if style not in ("front", "rear", "crossboundary"):
        raise ValueError(f"style must be 'front', 'rear' or 'crossboundary', got {style!r}")
    if rows not in (1, 2):
        raise ValueError(f"rows must be 1 or 2, got {rows!r}")
    if style == "crossboundary" and rows != 1:
        raise ValueError("cross-boundary plates have one row")
    if typeface not in TYPEFACES:
        raise ValueError(f"unknown typeface {typeface!r} (known: {', '.join(TYPEFACES)})")
    if width < 40:
        raise ValueError(f"plate width {width} is too small to draw")
    if len(text.replace(" ", "")) > (12 if style == "crossboundary" else MAX_MARK):
        raise ValueError(f"{text!r} is too long for a plate")
    face = TYPEFACES[typeface]
    w, h = plate_size(style, rows, width)
    bg, fg = _plate_colours(style, rng)
    plate = np.empty((h, w, 3), np.float32)
    plate[:] = bg

    params = dict(
        hscale=_pick(face.hscale, rng),
        weight=_pick(face.weight, rng),
        tracking=_pick(face.tracking, rng),
    )
    if style == "crossboundary":
        label = text.strip().upper().replace(" ", "")
        # Mainland layout: province and letter, a dot, then the number.
        if len(label) > 2 and _is_cjk(label[0]) and "·" not in label:
            label = label[:2] + "·" + label[2:]
        lines, char_frac, gap, max_w = [label], 0.64, 0.3, 0.92
        params["hscale"] *= 0.85
    elif rows == 1:
        lines, char_frac, gap, max_w = hk_rows(text, 1), _pick((0.67, 0.72), rng), 0.45, 0.88
    else:
        lines, char_frac, gap, max_w = hk_rows(text, 2), _pick((0.34, 0.37), rng), 0.3, 0.86
    char_h = max(6, round(h * char_frac))
    masks = [_row_mask(line, char_h, face, gap=gap, **params) for line in lines]
    # One squeeze for every row keeps the rows' characters alike; long personalised
    # marks are narrowed rather than shrunk, as makers do.
    squeeze = min(1.0, max_w * w / max(m.shape[1] for m in masks))
    masks = [
        cv2.resize(m, (max(1, round(m.shape[1] * squeeze)), char_h), interpolation=cv2.INTER_AREA)
        if squeeze < 1
        else m
        for m in masks
    ]
    row_gap = round(h * 0.11) if rows == 2 else 0
    block_h = len(masks) * char_h + (len(masks) - 1) * row_gap
    y = (h - block_h) // 2
    for mask in masks:
        x = (w - mask.shape[1]) // 2
        region = plate[y : y + char_h, x : x + mask.shape[1]]
        alpha = mask[:, :, None]
        region[:] = region * (1 - alpha) + fg * alpha
        y += char_h + row_gap

    out_ink = tuple(float(c) for c in fg)
    border = max(1, round(h / (60 if rows == 2 else 40)))
    inset = border + max(1, round(min(w, h) / 35))
    radius = 3 * inset
    _rounded_rect(plate, inset, w - 1 - inset, h - 1 - inset, radius, out_ink, border)

    effects = rng if rng is not None else np.random.default_rng(0)
    if screws:
        r = max(2, round(h * (0.045 if rows == 2 else 0.06)))
        if rows == 2:
            spots = [(round(w * 0.12), round(h * 0.5)), (round(w * 0.88), round(h * 0.5))]
        else:
            spots = [(round(w * 0.5), round(h * 0.1) + r), (round(w * 0.5), h - round(h * 0.1) - r)]
            if masks[0].shape[1] < 0.8 * w:
                spots = [(round(w * 0.05) + r, h // 2), (w - round(w * 0.05) - r, h // 2)]
        _screws(plate, spots, r, rng)
    if frame:
        _frame(plate, effects)
    if dirt > 0:
        _dirt(plate, dirt, effects)
    if lighting > 0:
        _lighting(plate, lighting, effects)
    img = np.clip(plate, 0, 255).astype(np.uint8)
    if perspective or rotation:
        img = _warp(img, perspective, rotation, effects, (35, 35, 38))
    if night:
        img = _night(img, effects, glare=int(effects.integers(0, 2)))
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if jpeg is not None:
        img = _jpeg(img, jpeg)
    return img


def _rounded_rect(img, x1: int, x2: int, y2: int, r: int, colour, thickness: int) -> None:
    """The plate's thin border line, rounded at the corners; top edge at ``x1`` inset."""
    y1 = x1
    r = max(1, min(r, (x2 - x1) // 4, (y2 - y1) // 4))
    for a, b in (((x1 + r, y1), (x2 - r, y1)), ((x1 + r, y2), (x2 - r, y2))):
        cv2.line(img, a, b, colour, thickness, cv2.LINE_AA)
    for a, b in (((x1, y1 + r), (x1, y2 - r)), ((x2, y1 + r), (x2, y2 - r))):
        cv2.line(img, a, b, colour, thickness, cv2.LINE_AA)
    for (cx, cy), start in (
        ((x1 + r, y1 + r), 180),
        ((x2 - r, y1 + r), 270),
        ((x2 - r, y2 - r), 0),
        ((x1 + r, y2 - r), 90),
    ):
        cv2.ellipse(img, (cx, cy), (r, r), 0, start, start + 90, colour, thickness, cv2.LINE_AA)


# -- marks ---------------------------------------------------------------------------

_WORDS = (
    "LOVE", "BB", "KING", "WOLLY", "HAPPY", "BOSS", "LUCKY", "88", "MAX", "TIGER", "JOY",
    "STAR", "MOMO", "DRAGON", "1", "ICU", "HK", "GOGO", "BEAR", "CEO", "MR", "JASON",
)  # fmt: skip


def random_standard_mark(rng: np.random.Generator) -> str:
    """A standard mark: two letters (no I, O or Q) and a number 1-9999 without leading
    zeros, e.g. "KT4821". The number of digits is drawn first, so short numbers are
    as common as long ones: each length reads differently."""
    letters = "".join(HK_LETTERS[i] for i in rng.integers(0, len(HK_LETTERS), size=2))
    digits = int(rng.integers(1, 5))
    return f"{letters}{int(rng.integers(10 ** (digits - 1), 10**digits))}"


def random_personalised_mark(rng: np.random.Generator) -> str:
    """A personalised mark of 2-8 characters, spelled as plates show it (I -> 1, O -> 0,
    no Q), e.g. "L0VEBB"."""
    while True:
        words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), size=int(rng.integers(1, 3)))]
        mark = "".join(words).replace("I", "1").replace("O", "0").replace("Q", "0")
        if 2 <= len(mark) <= MAX_MARK:
            return mark


def random_crossboundary_mark(rng: np.random.Generator) -> str:
    """A Guangdong cross-boundary mark such as "粤Z1234港" (or 澳 for Macau)."""
    chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    body = "".join(chars[i] for i in rng.integers(0, len(chars), size=4))
    return f"{PROVINCE}Z{body}{REGIONS[int(rng.integers(2))]}"


# -- scenes --------------------------------------------------------------------------


@dataclass(frozen=True)
class HkPlate:
    """One car's plate for :func:`render_hk_scene`; ``crossboundary`` is the text of a
    mainland plate hung directly below it, if any."""

    text: str
    rows: int = 1
    style: Literal["front", "rear"] = "rear"
    typeface: str = DEFAULT_TYPEFACE
    crossboundary: str | None = None


@dataclass(frozen=True)
class PlateTruth:
    """Ground truth of one plate in a scene: its text without spaces, its box
    (x1, y1, x2, y2) in image pixels, its kind and rows."""

    text: str
    box: Box
    kind: Kind
    rows: int


def render_hk_scene(
    plates: Sequence[HkPlate | str],
    *,
    size: tuple[int, int] = (1280, 720),
    rng: np.random.Generator,
    plate_frac: tuple[float, float] = (0.08, 0.20),
    perspective: bool = True,
    wear: float = 0.0,
    night: bool = False,
    blur: float = 0.6,
    noise: float = 3.0,
    jpeg: int | None = None,
) -> tuple[np.ndarray, list[PlateTruth]]:
    """A road-like BGR scene ``size`` = (width, height) with one car per plate.

    Like :func:`edge.synth.scenes.render_scene` but with :func:`render_hk_plate` plates: a
    plain string is a one-row plate of a random colour and typeface; an
    :class:`HkPlate` says rows, style, typeface and an optional cross-boundary plate
    stacked under it. ``plate_frac`` is the width a one-row plate would take of the
    frame (two-row plates are smaller, as in life). ``wear`` (0..1) adds screws,
    frames, dirt and uneven light at random; ``night`` dims the scene but less the
    retro-reflective plates, and adds glare; ``blur``, ``noise`` and ``jpeg`` are as
    in :func:`render_hk_plate`. Returns the image and the truths, each HK plate
    followed by its cross-boundary plate.
    """
    w, h = size
    specs = [
        HkPlate(p, style=("front", "rear")[int(rng.integers(2))],
                typeface=tuple(TYPEFACES)[int(rng.integers(len(TYPEFACES)))])
        if isinstance(p, str) else p
        for p in plates
    ]  # fmt: skip
    img = _background((w, h), rng)
    n = len(specs)
    col_w = w / max(n, 1)
    placed: list[tuple[HkPlate, str, np.ndarray, int, Style]] = []
    for i, spec in enumerate(specs):
        mm = rng.uniform(*plate_frac) * w / ONE_ROW_MM[0]
        if n > 1:
            mm = min(mm, col_w / (4.2 * ONE_ROW_MM[0]))
        stack = [(spec.text, spec.rows, spec.style, TWO_ROW_MM if spec.rows == 2 else ONE_ROW_MM)]
        if spec.crossboundary:
            stack.append((spec.crossboundary, 1, "crossboundary", CROSSBOUNDARY_MM))
        stack_h = sum(s[3][1] for s in stack) * mm
        cx = col_w * (i + 0.5) + rng.uniform(-0.1, 0.1) * col_w
        ref = 110 * mm
        low, high = max(0.55 * h, 7.8 * ref), 0.9 * h - 2 * ref - stack_h
        top = rng.uniform(min(low, high), high) - stack_h / 2
        angle = np.deg2rad(rng.uniform(-4, 4)) if perspective else 0.0
        squeeze = rng.uniform(-0.08, 0.08) if perspective else 0.0
        # Sized by a one-row plate (520 x 110 mm), not by the plates mounted, so two-row
        # and stacked plates sit on cars of the usual size.
        draw_car_body(img, cx, top, top + stack_h, ONE_ROW_MM[0] * mm, ONE_ROW_MM[1] * mm, rng)
        half_w = max(s[3][0] for s in stack) * mm / 2
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = np.array([cx, top + stack_h / 2])
        y = -stack_h / 2
        quads = []
        for text, rows, style, (pw_mm, ph_mm) in stack:
            pw, ph = pw_mm * mm, ph_mm * mm
            rect = np.float64([[-pw / 2, y], [pw / 2, y], [pw / 2, y + ph], [-pw / 2, y + ph]])
            # Viewed off-axis: the far side of the stack is a little shorter.
            rect[:, 1] *= 1 - squeeze * rect[:, 0] / half_w
            corners = rect @ rot.T + centre
            corners[:, 0] = corners[:, 0].clip(1, w - 2)
            corners[:, 1] = corners[:, 1].clip(1, h - 2)
            quads.append(corners)
            placed.append((spec, text, corners, rows, style))
            y += ph
        holder = np.concatenate(quads)
        lo, hi = holder.min(axis=0), holder.max(axis=0)
        pad = np.array([0.03, 0.12]) * (hi - lo).min()
        cv2.rectangle(
            img, tuple((lo - pad).astype(int)), tuple((hi + pad).astype(int)), (20, 20, 20), -1
        )

    if night:
        img = (img.astype(np.float32) * rng.uniform(0.2, 0.35)).astype(np.uint8)
    plate_gain = rng.uniform(0.55, 0.85) if night else 1.0
    truths: list[PlateTruth] = []
    for spec, text, corners, rows, style in placed:
        box = tuple(float(v) for v in (*corners.min(axis=0), *corners.max(axis=0)))
        worn = wear > 0 and rng.random() < wear
        plate = render_hk_plate(
            text,
            rows=rows,
            style=style,
            typeface=spec.typeface,
            width=max(40, round(box[2] - box[0])),
            rng=rng,
            screws=worn and rng.random() < 0.6,
            frame=worn and style != "crossboundary" and rng.random() < 0.4,
            dirt=float(rng.uniform(0, wear)) if worn else 0.0,
            lighting=float(rng.uniform(0, wear)) if worn else 0.0,
        )
        if night:
            plate = (plate.astype(np.float32) * plate_gain).astype(np.uint8)
        _paste_warped(img, plate, corners)
        kind: Kind = "crossboundary" if style == "crossboundary" else "hk"
        truths.append(PlateTruth(text.replace(" ", "").upper(), box, kind, rows))

    if night:
        img = _night_glare(img, rng)
    img = blur_and_grain(img, blur, noise, rng)
    if jpeg is not None:
        img = _jpeg(img, jpeg)
    return img, truths


def _night_glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Oncoming headlights and street lamps blooming into an already dim frame."""
    h, w = img.shape[:2]
    # Work at a quarter size: glare is smooth, and full-size Gaussians cost 100 ms.
    small = (max(1, w // 4), max(1, h // 4))
    ys, xs = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float32)
    light = np.zeros((small[1], small[0]), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, small[0]), rng.uniform(0.2, 0.7) * small[1]
        r = rng.uniform(0.006, 0.02) * small[0]
        d2 = (xs - cx) ** 2 + (ys - cy) ** 2
        light += np.exp(-d2 / (2 * (5 * r) ** 2)) * 0.25 + np.exp(-d2 / (2 * r**2)) * 2
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
    tint = np.array([235, 245, 255], np.float32)
    out = img.astype(np.float32) + np.minimum(light, 1.5)[:, :, None] * tint
    # A high gain after dark: sensor noise well above the daytime grain.
    out += rng.normal(0, rng.uniform(4, 9), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
