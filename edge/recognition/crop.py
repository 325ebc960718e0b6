"""Turning a detector box into the line images an OCR engine reads.

A detector box is loose or tight by a few pixels, axis-aligned around a plate that
may be tilted, and often includes things that are not the registration: the blue
EU band with its country letters, frame screws, dealer text. Each step here is a
small, independent image operation. :func:`crop_plate` switches on by default the
ones that measurably improved reading of real photos (margin, band cut, max-channel
grey, the trim of a short registration to its text). Deskew and CLAHE are options
only: neither improved reading.

:func:`plate_lines` gives what the recogniser reads: the crop as one line, widened
until the recogniser has enough output columns per character, and, for a squarish
crop that may be a two-row plate, the crop's two rows laid side by side as a second
line. The caller keeps whichever reading the plate format accepts more surely, so a
one-row plate with text bands above and below is never read as two rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

#: Width / height at or above which a crop is taken as one row without looking:
#: one-row plates are 4-5 times wider than high, two-row ones 1.3-2.
TWO_LINE_MAX_ASPECT = 2.4
#: Line recognisers scale a line to a fixed height (48 px for PP-OCR) and give one
#: output column per sixth of that height; a character needs about three columns to
#: be read (reads collapse below that), and a plate character is about half as wide
#: as high, so a line narrower than this many heights is widened to it. Measured at
#: true boxes: US plates (2:1 with state name and slogan) 0.46 -> 0.53 exact, HK
#: one-row 29 -> 31 of 31; EU plates (4-5:1) are never touched.
MIN_LINE_ASPECT = 3.0
#: A widened line (a short registration, a 2:1 plate) is followed by this share of
#: its width of blank in the grey the PP-OCR and EasyOCR inputs normalise to 0, their
#: padding: PaddleOCR's recognisers are trained and run on lines padded to 320 px (6.7
#: heights), and a short line ending at the input's edge read worse. Measured at
#: detected boxes: US exact 0.644 -> 0.671, wrong reads 0.225 -> 0.203, HK and EU
#: unchanged; a tail of the whole width cost an HK plate (PJ391 unread), a quarter of
#: the width after every line cost EU 2 plates. The recogniser is sensitive to a line's
#: exact width (a tail one pixel shorter changed 6 of 222 US reads), so differences of
#: a few plates between such variants are noise.
LINE_TAIL = 0.5
PAD_GREY = 128
#: A two-row plate's rows are read without this share of the crop's width at either
#: side: the frame's edges, bolts and the car body there read as 1, L or [.
TWO_ROW_INSET = 0.08
# Crops lower than this are too small to hold two readable rows.
TWO_ROW_MIN_HEIGHT = 16
# Text on a plate, in crop heights: characters are closer together than TEXT_GAP (a
# wider gap is the blank beside a short registration); a plate's frame line is
# thinner than FRAME_LINE; TEXT_PAD of blank is left either side of the text.
TEXT_GAP = 0.6
FRAME_LINE = 0.3
TEXT_PAD = 0.5
# Ink wholly within this share of the width from either side is the car or background
# in the crop's margin; a frame line lies within FRAME_BAND.
SIDE_BAND = 0.12
FRAME_BAND = 0.2
#: The text must leave this share of the width blank before the crop is trimmed to it.
TRIM_MIN_BLANK = 0.1


def expand_box(
    box: Sequence[float], shape: tuple[int, ...], margin_x: float, margin_y: float
) -> tuple[int, int, int, int]:
    """``box`` (x1, y1, x2, y2) grown by fractions of its size, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(1.0, x2 - x1), max(1.0, y2 - y1)
    H, W = shape[:2]
    return (
        max(0, round(x1 - margin_x * w)),
        max(0, round(y1 - margin_y * h)),
        min(W, round(x2 + margin_x * w)),
        min(H, round(y2 + margin_y * h)),
    )


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def blue_band_width(crop: np.ndarray, *, max_fraction: float = 0.25) -> int:
    """Width in pixels of an EU-style blue band at the crop's left edge (0 if none).

    A column belongs to the band when most of its middle rows are saturated blue.
    The band must start near the left edge and end well before the middle; a plate
    whose whole background is blue has no band to cut.
    """
    if crop.ndim != 3 or crop.shape[1] < 8:
        return 0
    h, w = crop.shape[:2]
    hsv = cv2.cvtColor(crop[h // 5 : h - h // 5 or h], cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    blue = (hue >= 95) & (hue <= 130) & (sat >= 70) & (val >= 40)
    frac = blue.mean(axis=0)
    limit = max(2, int(w * max_fraction))
    start_limit = max(2, int(w * 0.12))
    cols = frac >= 0.4
    first = int(np.argmax(cols[:start_limit])) if cols[:start_limit].any() else -1
    if first < 0:
        return 0
    end = first
    while end < w and (cols[end] or (end + 1 < w and cols[end + 1])):
        end += 1
    if end > limit or end - first < max(2, w // 40):
        return 0
    # Blue that carries on past the band is the plate's own background.
    if blue[:, end:].mean() > 0.25:
        return 0
    # The band's edge is soft after resizing; a sliver more keeps stars out.
    return min(w, end + max(1, w // 100))


def text_line_angle(crop: np.ndarray) -> float | None:
    """Tilt of the text line in degrees (counter-clockwise positive), or None.

    Character-sized dark blobs on the plate are found by thresholding; a straight
    line through their centres gives the tilt. None when too few blobs agree.
    """
    grey = _grey(crop)
    h, w = grey.shape[:2]
    if h < 8 or w < 16:
        return None
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    pts = []
    for i in range(1, n):
        _, y, bw, bh, area = stats[i]
        # Characters: a good part of the plate's height, upright, not touching
        # top and bottom (that is the frame), not wider than a few character widths.
        if not (0.2 * h <= bh <= 0.9 * h and bw <= 1.2 * bh and area >= 0.15 * bw * bh):
            continue
        if y <= 0 or y + bh >= h:
            continue
        pts.append(centroids[i])
    if len(pts) < 3:
        return None
    pts_arr = np.asarray(pts, np.float64)
    xs, ys = pts_arr[:, 0], pts_arr[:, 1]
    if xs.max() - xs.min() < 0.3 * w:
        return None
    slope, intercept = np.polyfit(xs, ys, 1)
    resid = ys - (slope * xs + intercept)
    # Drop blobs far off the line (a screw, a sticker) and fit again.
    keep = np.abs(resid) <= max(1.5, 0.08 * h)
    if keep.sum() >= 3 and keep.sum() < len(xs):
        slope, intercept = np.polyfit(xs[keep], ys[keep], 1)
    return -math.degrees(math.atan(slope))


def rotate(crop: np.ndarray, angle: float) -> np.ndarray:
    """``crop`` turned ``angle`` degrees counter-clockwise about its centre.

    Same size; the corners are filled by replicating the edges so no black wedge
    appears for the recogniser to read.
    """
    h, w = crop.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _ink(grey: np.ndarray) -> np.ndarray:
    """Where a grey plate crop has ink: darker than the plate's own background by a
    third of its contrast, so a dark plate counts too."""
    background = float(np.percentile(grey, 90))
    ink = np.clip(background - grey.astype(np.float32), 0, None)
    return ink > 0.35 * max(1.0, background - float(np.percentile(grey, 5)))


def text_span(crop: np.ndarray) -> tuple[int, int] | None:
    """Columns (x1, x2) of a one-row plate's text with some blank either side, or None
    when the text fills the crop (or no text is found).

    A short registration ("C4") sits in the middle of a full-size plate. Read whole,
    the blank either side outweighs the two characters and the recogniser often reads
    nothing until the plate is large; trimmed to its text it reads from its first
    legible frames. Columns with ink across the middle rows are grouped (gaps under
    ``TEXT_GAP`` heights join), and thin groups near the ends, the plate's frame
    lines, and ink in the crop's outer margin, are dropped.
    """
    grey = _grey(crop)
    h, w = grey.shape[:2]
    if h < 8 or w < TWO_LINE_MAX_ASPECT * h:
        return None
    # The middle rows: characters cross them, the frame's top and bottom lines do not.
    inked = _ink(grey)[int(0.3 * h) : h - int(0.3 * h)].mean(axis=0) > 0.2
    edges = np.flatnonzero(np.diff(np.concatenate(([0], inked.astype(np.int8), [0]))))
    runs = edges.reshape(-1, 2).tolist()  # [start, end) of each inked run
    if not runs:
        return None
    groups = [runs[0]]
    for start, end in runs[1:]:
        if start - groups[-1][1] < TEXT_GAP * h:
            groups[-1] = [groups[-1][0], end]
        else:
            groups.append([start, end])

    def beside(start: int, end: int) -> bool:
        # The car or the background within the crop's margin, or a frame line.
        thin = end - start < FRAME_LINE * h
        return end <= SIDE_BAND * w or (thin and start < FRAME_BAND * w)

    while groups and beside(*groups[0]):
        groups.pop(0)
    while groups and beside(w - groups[-1][1], w - groups[-1][0]):
        groups.pop()
    if not groups:
        return None
    x1 = max(0, int(groups[0][0] - TEXT_PAD * h))
    x2 = min(w, int(groups[-1][1] + TEXT_PAD * h))
    if x2 - x1 > (1 - TRIM_MIN_BLANK) * w:
        return None
    return x1, x2


def join_rows(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """A two-row plate laid out as one row: top row, a gap, then the bottom row.

    Both rows are scaled to the same height so a line recogniser reads them in order.
    """
    height = max(top.shape[0], bottom.shape[0])

    def scaled(part: np.ndarray) -> np.ndarray:
        pw = max(1, round(part.shape[1] * height / max(1, part.shape[0])))
        return cv2.resize(part, (pw, height), interpolation=cv2.INTER_LINEAR)

    both = np.concatenate([top.reshape(-1, *top.shape[2:]), bottom.reshape(-1, *top.shape[2:])])
    fill = np.median(both, axis=0)
    gap = np.empty((height, max(2, height // 3), *top.shape[2:]), top.dtype)
    gap[...] = fill.astype(top.dtype)
    return np.ascontiguousarray(np.concatenate([scaled(top), gap, scaled(bottom)], axis=1))


def dark_is_coloured(crop: np.ndarray) -> bool:
    """Whether the crop's dark half (by Otsu) is strongly coloured.

    True for coloured text, for light text on a coloured background and under a
    strong colour cast: the cases where the max-channel grey would lose the
    contrast between text and background.
    """
    if crop.ndim != 3:
        return False
    grey = _grey(crop)
    _, dark = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    if not dark.any():
        return False
    sat = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)[..., 1]
    return float(np.median(sat[dark > 0])) > 90


def value_grey(crop: np.ndarray) -> np.ndarray:
    """Brightness as the max of B, G, R, back in 3 channels.

    Plate characters are dark while the blue band, coloured emblems, stickers and
    yellow backgrounds are bright in at least one channel, so this keeps the text
    and fades most of what is not text.
    """
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    v = crop.max(axis=2)
    return cv2.cvtColor(v, cv2.COLOR_GRAY2BGR)


def clahe(crop: np.ndarray, clip: float = 2.0) -> np.ndarray:
    """Local contrast equalisation on the luminance, for dim or washed-out plates."""
    tiles = (max(1, crop.shape[1] // 32), max(1, crop.shape[0] // 32))
    eq = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles[0], tiles[1]))
    if crop.ndim == 2:
        return eq.apply(crop)
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    lab[..., 0] = eq.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def crop_plate(
    image: np.ndarray,
    box: Sequence[float],
    *,
    margin_x: float = 0.06,
    margin_y: float = 0.08,
    cut_band: bool = True,
    grey: str = "auto",
    trim: bool = True,
    deskew: bool = False,
    contrast: bool = False,
) -> np.ndarray:
    """The OCR input for ``box`` (x1, y1, x2, y2 in ``image`` pixels), BGR uint8.

    * ``margin_x``/``margin_y``: the box grown by these fractions of its width and
      height, so a tight or shifted detector box does not clip the end characters;
    * ``cut_band``: drop an EU blue band at the left (its country letters and
      stars are read as characters otherwise);
    * ``grey``: "value" (max of B, G, R: dark text stays, coloured emblems, bands
      and backgrounds fade), "luma", "none" (colour), or "auto" (value unless the
      dark pixels are coloured, see :func:`dark_is_coloured`, then luma);
    * ``trim``: cut the blank beside a short registration (see :func:`text_span`);
    * ``deskew``: level a tilted text line; ``contrast``: CLAHE. Both off by
      default: neither improved reading on real plates.
    """
    if grey not in ("auto", "value", "luma", "none"):
        raise ValueError(f"grey must be auto, value, luma or none, not {grey!r}")
    x1, y1, x2, y2 = expand_box(box, image.shape, margin_x, margin_y)
    if x2 <= x1 or y2 <= y1:
        return np.zeros((1, 1, 3), np.uint8)
    crop = image[y1:y2, x1:x2]
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if deskew:
        angle = text_line_angle(crop)
        if angle is not None and 1.0 <= abs(angle) <= 25.0:
            crop = rotate(crop, -angle)
    if cut_band:
        cut = blue_band_width(crop)
        if cut:
            crop = crop[:, cut:]
    if grey == "auto":
        grey = "luma" if dark_is_coloured(crop) else "value"
    if grey == "value":
        crop = value_grey(crop)
    elif grey == "luma":
        crop = cv2.cvtColor(_grey(crop), cv2.COLOR_GRAY2BGR)
    if contrast:
        crop = clahe(crop)
    if trim:
        span = text_span(crop)
        if span is not None:
            crop = crop[:, span[0] : span[1]]
    return np.ascontiguousarray(crop)


def widen(line: np.ndarray, min_aspect: float = MIN_LINE_ASPECT) -> np.ndarray:
    """``line`` stretched horizontally to ``min_aspect`` times its height when narrower,
    so the recogniser has enough output columns for each character, and followed by
    :data:`LINE_TAIL` of its width in the recognisers' padding grey."""
    h, w = line.shape[:2]
    if w >= min_aspect * h:
        return line
    width = math.ceil(min_aspect * h)
    out = np.full((h, width + math.ceil(LINE_TAIL * width), *line.shape[2:]), PAD_GREY, line.dtype)
    out[:, :width] = cv2.resize(line, (width, h), interpolation=cv2.INTER_LINEAR)
    return out


#: The plate's own background must make up this much of the box it is found in, and
#: fill this much of that box, to be taken as the plate (else the crop is kept whole).
PLATE_AREA_MIN = 0.35
PLATE_FILL_MIN = 0.5


def plate_region(crop: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x1, y1, x2, y2) of a light plate's background inside ``crop``: the
    largest light region (by Otsu), whose holes are the characters. None when no such
    region dominates (a dark plate, or a crop the plate already fills)."""
    grey = _grey(crop)
    _, light = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(light, connectivity=4)
    if n < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[best])
    if w * h < PLATE_AREA_MIN * grey.size or area < PLATE_FILL_MIN * w * h:
        return None
    return x, y, x + w, y + h


def two_row_line(crop: np.ndarray, inset: float = TWO_ROW_INSET) -> np.ndarray:
    """A squarish crop read as a two-row plate: cut at half height (HK's two-row
    plates have rows of equal height), without the sides, each row trimmed to its
    text (a frame line at a row's end reads as 1) and the rows laid side by side.

    An ink-profile valley was tried for the cut and lost to half height on real
    two-row plates: the car body and frame in the margins flatten the profile."""
    region = plate_region(crop)
    if region is not None:
        # The plate's own background: a chrome frame or the car around a loose box
        # moves the rows off the box's half height and reads as 1 at a row's end.
        x1, y1, x2, y2 = region
        crop = crop[y1:y2, x1:x2]
    h, w = crop.shape[:2]
    dx = round(inset * w)
    inner = crop[:, dx : w - dx]

    def trimmed(row: np.ndarray) -> np.ndarray:
        span = text_span(row)
        return row[:, span[0] : span[1]] if span is not None else row

    return join_rows(trimmed(inner[: h // 2]), trimmed(inner[h // 2 :]))


def plate_lines(image: np.ndarray, box: Sequence[float], **options) -> tuple[np.ndarray, ...]:
    """The line images to read for ``box``: the crop as one widened line, then, for a
    squarish crop that may be a two-row plate, its rows side by side. ``options`` go
    to :func:`crop_plate`."""
    crop = crop_plate(image, box, **options)
    lines = [widen(crop)]
    h, w = crop.shape[:2]
    if h >= TWO_ROW_MIN_HEIGHT and w < TWO_LINE_MAX_ASPECT * h:
        lines.append(two_row_line(crop))
    return tuple(lines)
