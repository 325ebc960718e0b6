"""EasyOCR's ``english_g2`` recogniser as an OCR engine: how a plate crop becomes the
model's input line (:class:`Preprocess`), decoding restricted to plate characters
(:class:`CharsetDecoder`), the batching shared by every backend
(:class:`EnglishG2Base`), and :class:`EnglishG2Onnx`, which runs the ONNX copy
written by :mod:`edge.recognition.ocr.easyocr_convert` with onnxruntime, so the
default pipeline never imports torch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.recognition.ocr import ctc
from edge.recognition.ocr.base import BaseOCR
from edge.types import OcrResult

log = logging.getLogger("edge.ocr.easyocr_onnx")

#: Classes 1..96 of english_g2 (class 0 is the CTC blank), in the model's order,
#: as listed in easyocr's recognition model config.
CHARACTERS = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
#: The model's input height; widths vary with the crop's aspect ratio.
HEIGHT = 64
PLATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ONNX_NAME = "english_g2.onnx"
PTH_NAME = "english_g2.pth"

# --------------------------------------------------------------------------- reading crops


@dataclass(frozen=True, slots=True)
class Preprocess:
    """How a plate crop is turned into the model's input line.

    ``Preprocess.easyocr()`` is exactly what easyocr's own recogniser feeds the
    network. The defaults were chosen on 126 plates of generated Hong Kong scenes
    and the 108 real European photos, read end to end (detector, ``crop_plate``,
    format rules). Cutting the crop down to its line of characters is the largest
    gain: exact reads 0.16 -> 0.86 on the generated plates, which had a junk first
    character almost every time, and 0.18 -> 0.48 on the photos. Levelling,
    sharpening, thinning bold strokes and reading ``/`` as ``I`` (see
    :class:`CharsetDecoder`) each added to that, to 0.95 and 0.59.
    """

    #: "red" uses the red channel as grey, "luma" the usual weighted sum. Plate
    #: backgrounds (white, yellow) stay bright in red, red crests and stickers
    #: fade into them, and blue bands turn dark enough for ``trim_frame`` to cut;
    #: that gave fewer stray characters than luma.
    channel: str = "red"
    #: Find the plate's line of characters (:func:`find_text_line`) and cut the
    #: crop to it. english_g2 reads any frame edge, holder, bolt or emblem strip
    #: left beside the text as a character (``L``, ``C``, ``E``), and it reads
    #: best when the characters fill the line's height.
    locate_text: bool = True
    #: Room kept left and right of the outer characters, in character heights.
    #: Wider margins let frame lines back in and lowered exact reads.
    text_margin: float = 0.1
    #: Shear the cut so the character line is level: a plate seen at an angle
    #: otherwise puts its end characters at different heights in the line.
    level: bool = True
    #: Used when no line of characters is found (or ``locate_text`` is off): cut
    #: the dark plate frame / holder off the crop's edges.
    trim_frame: bool = True
    #: Cut the blue EU country band off the left edge. Off by default: with
    #: ``channel="red"`` the band is dark and ``trim_frame`` already removes it;
    #: this only matters with ``channel="luma"`` and no frame trimming.
    trim_band: bool = False
    #: Stretch the 2nd..98th grey-level percentiles to full range.
    contrast: bool = True
    #: Upsample crops lower than this (pixels) with bicubic first; 0 = never.
    min_height: int = 32
    #: Unsharp-mask strength on the 64-pixel line (0 = off). Plate crops are
    #: upsampled two to three times, and the blur that leaves made the model read
    #: D as 0 and H as 4.
    sharpen: float = 2.0
    #: Strokes thicker than this share of the character height are thinned to it
    #: (0 = off): blurred bold characters close up the insides of W, M, H and D.
    #: European plate fonts measure about 0.14 and are left alone.
    max_stroke: float = 0.16

    @classmethod
    def easyocr(cls) -> Preprocess:
        return cls(
            channel="luma",
            locate_text=False,
            level=False,
            trim_frame=False,
            trim_band=False,
            contrast=False,
            min_height=0,
            sharpen=0.0,
            max_stroke=0.0,
        )

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """One BGR (or grey) crop as a ``(1, 64, W)`` float32 input, W a multiple of 64."""
        crop = np.asarray(crop)
        if crop.ndim == 3 and crop.shape[2] == 4:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
        elif crop.ndim == 3 and crop.shape[2] == 1:
            crop = crop[:, :, 0]
        if crop.ndim not in (2, 3) or (crop.ndim == 3 and crop.shape[2] != 3):
            raise ValueError(f"expected a BGR or grey crop, got shape {crop.shape}")
        if crop.shape[0] < 1 or crop.shape[1] < 1:
            raise ValueError(f"empty crop {crop.shape}")
        if crop.dtype != np.uint8:
            crop = np.clip(crop, 0, 255).astype(np.uint8)
        line = None
        if self.locate_text:
            grey = to_grey(crop, self.channel)
            line = find_text_line(stretch_contrast(grey))
            if line is not None:
                grey, line = cut_to_line(grey, line, margin=self.text_margin, level=self.level)
        if line is None:
            if self.trim_frame:
                crop = trim_frame(crop, channel=self.channel)
            if self.trim_band and crop.ndim == 3:
                crop = trim_blue_band(crop)
            grey = to_grey(crop, self.channel)
        if self.contrast:
            grey = stretch_contrast(grey)
        out = resize_to_height(grey, min_height=self.min_height)
        if self.sharpen > 0:
            out = unsharp(out, self.sharpen)
        if line is not None and self.max_stroke > 0:
            scale = out.shape[0] / grey.shape[0]
            out = thin_strokes(out, line, self.max_stroke, scale)
        return to_input(out, padded_width(grey.shape[1] / grey.shape[0]))


def to_grey(crop: np.ndarray, channel: str = "luma") -> np.ndarray:
    if crop.ndim == 2:
        return crop
    if channel == "red":
        return np.ascontiguousarray(crop[:, :, 2])
    if channel == "luma":
        return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"unknown channel {channel!r} (use 'red' or 'luma')")


def trim_frame(crop: np.ndarray, *, channel: str = "red", dark: float = 0.7, limit: float = 0.2):
    """Drop edge rows/columns that are mostly dark (frame, holder, shadow).

    The recogniser reads a dark vertical bar as ``I``/``L``/``[`` and a horizontal
    one shifts its vertical alignment. After Otsu thresholding, rows and columns
    are removed from each side while more than ``dark`` of their pixels are dark,
    never more than ``limit`` of the crop per side, so text itself survives.
    """
    grey = to_grey(crop, channel)
    if min(grey.shape) < 4:
        return crop
    _, ink = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    rows = ink.mean(axis=1)
    cols = ink.mean(axis=0)

    def run(profile: np.ndarray) -> int:
        n = 0
        while n < int(len(profile) * limit) and profile[n] > dark:
            n += 1
        return n

    h, w = grey.shape
    top, bottom = run(rows), run(rows[::-1])
    left, right = run(cols), run(cols[::-1])
    return crop[top : h - bottom, left : w - right]


def trim_blue_band(crop: np.ndarray, *, share: float = 0.35, limit: float = 0.3) -> np.ndarray:
    """Cut the blue country band (EU stars and country code) off a plate's left edge.

    english_g2 reads the band as an extra leading character (``E``, ``L``, ``C``)
    on about a third of European plates. Only a band that starts at the very left
    (first 10%) and ends within ``limit`` of the width is cut; plates with blue
    backgrounds have blue columns throughout and are left alone.
    """
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    blue = (hue >= 95) & (hue <= 135) & (sat >= 70) & (val >= 35)
    share_per_col = blue.mean(axis=0)
    w = crop.shape[1]
    cols = np.flatnonzero(share_per_col[: int(w * limit)] >= share)
    if cols.size == 0 or cols[0] > 0.1 * w:
        return crop
    if share_per_col[int(w * limit) :].mean() >= share:
        return crop
    return crop[:, cols[-1] + 1 :]


@dataclass(frozen=True, slots=True)
class TextLine:
    """The characters found on a plate crop, in that crop's pixels."""

    #: (x, y, w, h) of each character (or of characters that touch), left to right.
    boxes: tuple[tuple[float, float, float, float], ...]
    #: Dark characters on a light plate (False: light on dark).
    dark: bool
    #: Typical stroke width as a share of the character height.
    stroke: float
    #: Rise of the line through the character centres per pixel across.
    slope: float

    @property
    def char_height(self) -> float:
        return float(np.median([b[3] for b in self.boxes]))


#: Height the crop is scaled to for finding characters, so the size limits below
#: mean the same on a 15-pixel and a 90-pixel plate.
_FIND_HEIGHT = 64
#: Binarisation levels tried, as a step from Otsu's level towards the darkest ink
#: (negative: towards the background). Otsu alone splits the dark holder from the
#: plate; on a blurred plate the characters' edges then merge with the frame line
#: beside them, which a darker level separates, and faint characters on a grey
#: plate need a lighter one.
_INK_LEVELS = (0.0, 0.3, 0.5, -0.3)


@dataclass(frozen=True, slots=True)
class _Blob:
    x: int
    y: int
    w: int
    h: int
    area: int
    depth: np.ndarray  # each pixel's distance from the blob's edge

    @property
    def core(self) -> float:
        """Half the blob's thickest stroke."""
        return float(self.depth.max())

    @property
    def stroke(self) -> float:
        """Typical stroke width as a share of the height (most pixels lie on thinner
        parts than the joints, where ``core`` is measured)."""
        return 2 * float(np.percentile(self.depth, 90)) / self.h


def _blobs(ink: np.ndarray, min_h: float, max_h: float) -> list[_Blob]:
    """Connected ink blobs shaped like a character or a few touching ones."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    x, y, w, h, area = stats[1:].T
    # Frame lines and holders are long or hollow; a few characters that blur into
    # each other are at most about two and a half heights wide.
    keep = (h >= min_h) & (h <= max_h) & (w <= 2.5 * h) & (area >= 0.2 * w * h)
    if not keep.any():
        return []
    dist = cv2.distanceTransform(ink, cv2.DIST_L2, 3)
    out = []
    for i in np.flatnonzero(keep):
        bx, by, bw, bh = int(x[i]), int(y[i]), int(w[i]), int(h[i])
        box = (slice(by, by + bh), slice(bx, bx + bw))
        depth = dist[box][labels[box] == i + 1]
        out.append(_Blob(bx, by, bw, bh, int(area[i]), depth))
    return out


def _pick_line(blobs: list[_Blob], height_tol: float = 0.2) -> list[_Blob]:
    """The plate's characters among ``blobs``: the most ink of one height, in one row.

    A registration's characters share a height, a baseline and a stroke width;
    country letters, crests and dashes are smaller, and frame pieces that survive
    are thinner than the strokes.
    """
    best: list[_Blob] = []
    best_ink = 0
    for b in blobs:
        group = [c for c in blobs if abs(c.h - b.h) <= height_tol * b.h]
        ink = sum(c.area for c in group)
        if ink > best_ink:
            best, best_ink = group, ink
    if not best:
        return []
    ref = float(np.median([b.h for b in best]))
    mid = float(np.median([b.y + b.h / 2 for b in best]))
    best = [b for b in best if abs(b.y + b.h / 2 - mid) <= 0.35 * ref]
    if not best:
        return []
    core = float(np.median([b.core for b in best]))
    return [b for b in best if b.core >= 0.6 * core]


def find_text_line(grey: np.ndarray) -> TextLine | None:
    """Locate the characters on a grey (2-D uint8) plate crop; None if none are found.

    The crop is binarised at a few levels (:data:`_INK_LEVELS`), dark ink first and
    light ink if that finds nothing; the level that yields the most characters in
    one row wins (frame lines merged into characters hide them).
    """
    grey = np.asarray(grey)
    h, w = grey.shape[:2]
    if h < 4 or w < 4:
        return None
    f = _FIND_HEIGHT / h
    size = (max(1, round(w * f)), _FIND_HEIGHT)
    g = cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
    H = g.shape[0]
    chars: list[_Blob] = []
    dark = True
    for dark in (True, False):
        otsu, _ = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        end = float(np.percentile(g, 2 if dark else 98))
        for step in _INK_LEVELS:
            level = otsu + (end - otsu) * step
            ink = ((g <= level) if dark else (g > level)).astype(np.uint8) * 255
            found = _pick_line(_blobs(ink, 0.3 * H, 0.9 * H))
            if len(found) > len(chars):
                chars = found
        if chars:
            break
    if not chars:
        return None
    chars.sort(key=lambda b: b.x)
    ref = float(np.median([b.h for b in chars]))
    xs = np.array([b.x + b.w / 2 for b in chars])
    ys = np.array([b.y + b.h / 2 for b in chars])
    slope = 0.0
    if len(chars) >= 2 and np.ptp(xs) > ref:
        slope = float(np.clip(np.polyfit(xs, ys, 1)[0], -0.2, 0.2))
    return TextLine(
        boxes=tuple((b.x / f, b.y / f, b.w / f, b.h / f) for b in chars),
        dark=dark,
        stroke=float(np.median([b.stroke for b in chars])),
        slope=slope,
    )


def cut_to_line(
    grey: np.ndarray, line: TextLine, *, margin: float = 0.1, level: bool = True
) -> tuple[np.ndarray, TextLine | None]:
    """``grey`` cut to the characters of ``line``, levelled, and the line in the cut.

    The cut is exactly as high as the characters and ``margin`` character heights
    wider on each side. None instead of the line when nothing is left to cut.
    """
    h, w = grey.shape[:2]
    boxes = line.boxes
    slope = line.slope if level and abs(line.slope) > 0.01 else 0.0
    if slope:
        # A vertical shear rather than a rotation: it moves each column up or down
        # and keeps the characters upright, as a plate seen from the side needs.
        x0 = w / 2
        m = np.float32([[1, 0, 0], [-slope, 1, slope * x0]])
        grey = cv2.warpAffine(
            grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        boxes = tuple((x, y - slope * (x + bw / 2 - x0), bw, bh) for x, y, bw, bh in boxes)
    pad = margin * line.char_height
    x1 = max(0, int(min(b[0] for b in boxes) - pad))
    x2 = min(w, math.ceil(max(b[0] + b[2] for b in boxes) + pad))
    y1 = max(0, int(min(b[1] for b in boxes)))
    y2 = min(h, math.ceil(max(b[1] + b[3] for b in boxes)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return grey, None
    moved = tuple((x - x1, y - y1, bw, bh) for x, y, bw, bh in boxes)
    return grey[y1:y2, x1:x2], TextLine(moved, line.dark, line.stroke, 0.0)


def unsharp(line: np.ndarray, amount: float, sigma: float = 3.0) -> np.ndarray:
    """Unsharp mask: ``line`` plus ``amount`` times its difference from a blur."""
    blurred = cv2.GaussianBlur(line, (0, 0), sigma)
    return cv2.addWeighted(line, 1.0 + amount, blurred, -amount, 0)


def thin_strokes(line: np.ndarray, text: TextLine, max_stroke: float, scale: float) -> np.ndarray:
    """Thin ``text``'s strokes in ``line`` to ``max_stroke`` of the character height.

    ``scale`` is ``line``'s size relative to the pixels ``text`` was measured in.
    Grey-level dilation (or erosion, for light characters) by the excess width.
    """
    excess = (text.stroke - max_stroke) * text.char_height * scale
    k = round(excess)
    if k < 2:
        return line
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    return cv2.dilate(line, kernel) if text.dark else cv2.erode(line, kernel)


def stretch_contrast(grey: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    """Map the crop's ``low_pct``..``high_pct`` grey-level range onto 0..255.

    Plate crops from a moving car are often washed out (glare, haze) or dark;
    stretching puts the ink near black and the background near white whatever
    the exposure.
    """
    lo, hi = np.percentile(grey, (low_pct, high_pct))
    if hi - lo < 1:
        return grey
    out = (grey.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_to_height(grey: np.ndarray, height: int = HEIGHT, min_height: int = 0) -> np.ndarray:
    """Scale to the model height keeping the aspect ratio, as easyocr does.

    easyocr resizes with ``cv2.resize(..., interpolation=Image.LANCZOS)``; that PIL
    constant equals ``cv2.INTER_LINEAR``, so bilinear is what its recogniser sees.
    ``min_height`` > 0 first upsamples tiny crops with bicubic interpolation, which
    keeps stroke edges of a 15-pixel-high plate sharper than one bilinear jump.
    """
    h, w = grey.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"empty crop {grey.shape}")
    if 0 < h < min_height:
        f = min_height / h
        grey = cv2.resize(grey, (max(1, round(w * f)), min_height), interpolation=cv2.INTER_CUBIC)
        h, w = grey.shape[:2]
    new_w = max(1, int(height * w / h))
    return cv2.resize(grey, (new_w, height), interpolation=cv2.INTER_LINEAR)


def padded_width(aspect: float, height: int = HEIGHT) -> int:
    """easyocr pads each line to whole squares: ``ceil(w / h)`` of them, at least one.

    Taken from the crop's own aspect ratio, as easyocr does, not from the resized
    width, which is rounded down and can fall one square short.
    """
    return max(1, math.ceil(aspect)) * height


def to_input(line: np.ndarray, width: int) -> np.ndarray:
    """``(1, 64, width)`` float32 in [-1, 1], padded on the right with its last column.

    Repeating the edge column (not zeros) is how the recogniser was trained and how
    easyocr pads, so the LSTMs see no artificial black bar.
    """
    x = line.astype(np.float32) * (2.0 / 255.0) - 1.0
    if x.shape[1] < width:
        x = np.pad(x, ((0, 0), (0, width - x.shape[1])), mode="edge")
    return x[None, :, :width]


def prepare(crops: Sequence[np.ndarray], preprocess: Preprocess | None = None) -> list[np.ndarray]:
    """Each crop as a ``(1, 64, W)`` model input, W a multiple of 64."""
    pre = preprocess or Preprocess()
    return [pre(crop) for crop in crops]


def group_by_width(inputs: Sequence[np.ndarray], max_batch: int) -> list[list[int]]:
    """Indices of same-width inputs, in chunks of at most ``max_batch``.

    The backward LSTM reads padding too, so mixing widths in one batch would make a
    crop's reading depend on its neighbours; grouping equal widths keeps it the
    same as reading the crop alone while still batching the common case (several
    plates of similar shape).
    """
    by_width: dict[int, list[int]] = {}
    for i, x in enumerate(inputs):
        by_width.setdefault(int(x.shape[-1]), []).append(i)
    groups = []
    for idx in by_width.values():
        for s in range(0, len(idx), max(1, max_batch)):
            groups.append(idx[s : s + max_batch])
    return groups


#: Glyphs that never appear on a plate but that english_g2 reads a plate's bare
#: vertical ``I`` as; with ``fold_bars`` their probability counts for ``I``.
#: A final ``I`` read as ``/`` and then dropped cost about one European plate in 35.
BAR_GLYPHS = "|/"


class CharsetDecoder:
    """Probabilities -> :class:`OcrResult`, optionally restricted to plate characters.

    english_g2 reads general English text: a plate's ``0`` competes with ``o`` and
    ``O``, its ``I`` with ``l``, ``|`` and ``/``, and spaces and dashes are frequent.
    With ``allowed`` set, every other class is dropped and the frame renormalised,
    after lower-case letters are folded into their capitals (``fold_case``) and
    :data:`BAR_GLYPHS` into ``I`` (``fold_bars``): their probability counts for the
    plate character rather than being thrown away.
    """

    def __init__(
        self,
        charset: Sequence[str],
        *,
        allowed: str | None = PLATE_CHARS,
        fold_case: bool = True,
        fold_bars: bool = True,
        topk: int = 3,
        beam_width: int = 8,
        top_n: int = 5,
    ) -> None:
        self.charset = tuple(charset)
        self.restriction = None
        if allowed is not None:
            fold = {c.lower(): c for c in allowed if c.isalpha()} if fold_case else {}
            if fold_bars and "I" in allowed:
                fold.update(dict.fromkeys(BAR_GLYPHS, "I"))
            self.restriction = ctc.restrict_charset(self.charset, allowed, fold=fold)
        self.topk = topk
        self.beam_width = beam_width
        self.top_n = top_n

    def __call__(self, probs: np.ndarray) -> OcrResult:
        charset = self.charset
        if self.restriction is not None:
            probs = ctc.apply_restriction(probs, self.restriction)
            charset = self.restriction.charset
        return ctc.decode(
            probs,
            charset,
            topk=self.topk,
            beam_width=self.beam_width,
            top_n=self.top_n,
        )


class EnglishG2Base(BaseOCR):
    """Preprocessing, batching and decoding shared by every english_g2 backend.

    A backend only supplies :meth:`_forward` (a batch of inputs to softmax
    probabilities), so the ONNX and PyTorch paths read a crop identically except
    for the network arithmetic itself.
    """

    name = "easyocr"

    def __init__(
        self,
        charset: Sequence[str],
        *,
        preprocess: Preprocess | None = None,
        allowed: str | None = PLATE_CHARS,
        fold_case: bool = True,
        fold_bars: bool = True,
        max_batch: int = 16,
        topk: int = 3,
        beam_width: int = 8,
        top_n: int = 5,
    ) -> None:
        self.preprocess = preprocess or Preprocess()
        self.max_batch = max(1, int(max_batch))
        self._decoder = CharsetDecoder(
            charset,
            allowed=allowed,
            fold_case=fold_case,
            fold_bars=fold_bars,
            topk=topk,
            beam_width=beam_width,
            top_n=top_n,
        )

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 1, 64, W)`` inputs -> ``(N, T, classes)`` probabilities."""
        raise NotImplementedError

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame class probabilities ``(T, 97)`` for each crop, before decoding."""
        inputs = prepare(crops, self.preprocess)
        out: list[np.ndarray] = [np.empty(0)] * len(inputs)
        for group in group_by_width(inputs, self.max_batch):
            probs = self._forward(np.stack([inputs[i] for i in group]))
            for row, i in zip(probs, group, strict=True):
                out[i] = row
        return out

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        if len(crops) == 0:
            return []
        return [self._decoder(p) for p in self.probabilities(crops)]


class EnglishG2Onnx(EnglishG2Base):
    """english_g2 through onnxruntime; no PyTorch anywhere.

    ``model`` is the ``.onnx`` file written and verified by ``lpr-edge models fetch``
    (never converted at run time: the car runs only verified model files). Other
    keywords are those of :class:`EnglishG2Base`.
    """

    def __init__(
        self,
        model: Path,
        *,
        threads: int = 0,
        providers: Sequence[str] = ("cpu",),
        **options,
    ) -> None:
        from edge.recognition.runtime import create_session  # imports onnxruntime

        self._session = create_session(Path(model), threads=threads, providers=providers)
        meta = self._session.get_modelmeta().custom_metadata_map
        charset = json.loads(meta["charset"]) if "charset" in meta else ["", *CHARACTERS]
        super().__init__(charset, **options)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("engine is closed")
        (probs,) = self._session.run(["probs"], {"image": batch})
        return probs

    def close(self) -> None:
        self._session = None
