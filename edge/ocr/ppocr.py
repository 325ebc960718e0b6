"""PaddleOCR PP-OCRv4 text-line recogniser (ONNX) as a plate reader."""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge.ocr import ctc
from edge.ocr.base import BaseOCR
from edge.runtime import create_session
from edge.types import OcrResult

#: What a plate can contain. Everything else the model knows (6600+ classes, mostly
#: CJK) only gives it ways to misread a plate character.
PLATE_ALPHABET = string.ascii_uppercase + string.digits

# Lower-case and look-alike glyphs that the general-text model uses for plate
# characters; their probability is credited to the plate character instead of lost.
_FOLD = {
    **{c: c.upper() for c in string.ascii_lowercase},
    "|": "I",
    "丨": "I",
    "〇": "0",
    "о": "O",
    "О": "O",
}


def charset_from_metadata(character: str) -> list[str]:
    """Class texts of a PaddleOCR rec model, from its ``character`` metadata.

    Paddle's convention: class 0 is the CTC blank, then the dictionary lines in
    order, then a space as the last class (the ``use_space_char`` option).
    """
    chars = character.split("\n")
    if chars and chars[-1] == "":
        chars.pop()
    return ["", *chars, " "]


class PPOCRRecognizer(BaseOCR):
    """Reads plate crops with PP-OCRv4 rec and CTC decoding restricted to A-Z0-9.

    Crops are resized to the model's height keeping their aspect (``width_scale``
    squeezes them for speed), sorted by width so similar crops share a batch, and
    padded to the batch's widest. ``batch_size`` None means 1 on CPU-only
    providers and 8 otherwise. ``restrict`` limits decoding to A-Z0-9 with every
    other class counted as blank (``rest_to_blank``); ``beam_width`` 0 skips the
    beam search and reports only the best path's text as a candidate.
    """

    name = "ppocr"
    height = 48

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 0,
        providers: Sequence[str] = ("cpu",),
        restrict: bool = True,
        rest_to_blank: bool = True,
        batch_size: int | None = None,
        min_width: int = 0,
        max_width: int = 640,
        width_scale: float = 1.0,
        upscale: str = "linear",
        beam_width: int = 8,
        topk: int = 3,
    ) -> None:
        self._session: ort.InferenceSession | None = create_session(
            Path(model_path), threads=threads, providers=providers
        )
        self._input = self._session.get_inputs()[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ValueError(f"{model_path} has no 'character' metadata; not a PaddleOCR rec model")
        self._charset = charset_from_metadata(meta["character"])
        classes = self._session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self._charset):
            raise ValueError(
                f"{model_path}: {classes} output classes but {len(self._charset)} characters"
            )
        self._restriction = (
            ctc.restrict_charset(self._charset, PLATE_ALPHABET, fold=_FOLD) if restrict else None
        )
        self.rest_to_blank = bool(rest_to_blank)
        if batch_size is None:
            # On CPU one crop per run was faster (no padding work) and padding
            # slightly changes what the model reads; accelerators gain from batches.
            cpu_only = self._session.get_providers() == ["CPUExecutionProvider"]
            batch_size = 1 if cpu_only else 8
        self.batch_size = max(1, int(batch_size))
        self.min_width = int(min_width)
        self.max_width = int(max_width)
        self.width_scale = float(width_scale)
        self._upscale = {
            "linear": cv2.INTER_LINEAR,
            "cubic": cv2.INTER_CUBIC,
            "lanczos": cv2.INTER_LANCZOS4,
        }[upscale]
        self.beam_width = int(beam_width)
        self.topk = int(topk)

    @property
    def charset(self) -> list[str]:
        return list(self._charset)

    def _resize(self, crop: np.ndarray) -> np.ndarray:
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        elif crop.shape[2] == 4:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
        h, w = crop.shape[:2]
        width = min(
            self.max_width, max(8, math.ceil(self.width_scale * self.height * w / max(1, h)))
        )
        interp = cv2.INTER_AREA if h > self.height else self._upscale
        return cv2.resize(crop, (width, self.height), interpolation=interp)

    def _blob(self, images: list[np.ndarray]) -> np.ndarray:
        width = max(self.min_width, max(im.shape[1] for im in images))
        blob = np.zeros((len(images), 3, self.height, width), np.float32)
        for i, im in enumerate(images):
            # (x / 255 - 0.5) / 0.5; padding stays 0, the model's trained filler.
            blob[i, :, :, : im.shape[1]] = im.transpose(2, 0, 1) * np.float32(2 / 255) - 1
        return blob

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame class probabilities for each crop (restricted if configured)."""
        if self._session is None:
            raise RuntimeError("this PPOCRRecognizer is closed")
        resized = [self._resize(c) for c in crops]
        order = sorted(range(len(resized)), key=lambda i: resized[i].shape[1])
        out: list[np.ndarray | None] = [None] * len(resized)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            blob = self._blob([resized[i] for i in idx])
            probs = self._session.run(None, {self._input: blob})[0]
            for k, i in enumerate(idx):
                # Frames well past the crop's own width only saw padding; one spare
                # frame keeps a last character that straddles the edge.
                frames = math.ceil(probs.shape[1] * resized[i].shape[1] / blob.shape[3]) + 1
                p = probs[k, :frames]
                if self._restriction is not None:
                    p = ctc.apply_restriction(
                        p, self._restriction, rest_to_blank=self.rest_to_blank
                    )
                out[i] = p
        return [p for p in out if p is not None]

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        charset = self._restriction.charset if self._restriction is not None else self._charset
        return [
            ctc.decode(p, charset, topk=self.topk, beam_width=self.beam_width)
            for p in self.probabilities(crops)
        ]

    def close(self) -> None:
        self._session = None
