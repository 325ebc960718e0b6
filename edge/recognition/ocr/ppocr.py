"""PaddleOCR text-line recognisers (PP-OCRv6 small, PP-OCRv4; ONNX) as a plate reader."""

from __future__ import annotations

import math
import string
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edge.recognition.ocr import ctc
from edge.recognition.ocr.base import BaseOCR
from edge.recognition.runtime import create_session
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


def fold_affine_ops(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place into fewer, cheaper nodes computing the same function.

    PP-OCRv4's backbone (PPLCNetV3) surrounds every convolution with learnable
    scalar affines and writes hard-swish out as four element-wise ops; onnxruntime
    fuses none of them, and on a 2-core CPU these element-wise passes took about a
    third of the model's time. Three exact rewrites:

    * ``Conv -> Mul(a) -> Add(b)``: the scale and shift go into the conv's weights
      and bias;
    * ``Mul(c) -> Add(d) -> Conv`` with no padding: folded into the conv's weights
      and bias (with padding the border would differ, so those stay);
    * ``x * Clip(x + 3, 0, 6) / 6``: ``x * HardSigmoid(x)`` (alpha 1/6, beta 1/2).

    Outputs agree with the original to float rounding (about 1e-6). Returns the
    number of rewrites; a graph without these patterns is left as it was.
    """
    graph = model.graph
    const: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for init in graph.initializer:
        const[init.name] = numpy_helper.to_array(init)
    nodes = list(graph.node)
    users: dict[str, list] = defaultdict(list)
    producer: dict[str, onnx.NodeProto] = {}
    for node in nodes:
        for name in node.input:
            users[name].append(node)
        for name in node.output:
            producer[name] = node
    graph_outputs = {o.name for o in graph.output}

    def only_user(name: str):
        found = users.get(name, [])
        return found[0] if len(found) == 1 and name not in graph_outputs else None

    def scalar(name: str) -> float | None:
        value = const.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def operand(node) -> tuple[str | None, float | None]:
        """(tensor input, scalar constant) of a binary op with one scalar operand."""
        if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
            return None, None
        a, b = node.input
        if scalar(b) is not None and a not in const:
            return a, scalar(b)
        if scalar(a) is not None and b not in const:
            return b, scalar(a)
        return None, None

    removed: set[int] = set()
    weights: dict[int, tuple[onnx.NodeProto, np.ndarray, np.ndarray]] = {}

    def conv_weights(conv) -> tuple[np.ndarray, np.ndarray]:
        if id(conv) not in weights:
            w = const[conv.input[1]].astype(np.float64)
            has_bias = len(conv.input) > 2 and conv.input[2]
            b = const[conv.input[2]].astype(np.float64) if has_bias else np.zeros(w.shape[0])
            weights[id(conv)] = (conv, w, b)
        return weights[id(conv)][1], weights[id(conv)][2]

    rewrites = 0
    for conv in nodes:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in const:
            continue
        # Conv -> Mul(a) -> Add(b)
        mul = only_user(conv.output[0])
        add = only_user(mul.output[0]) if mul is not None else None
        if mul is not None and add is not None:
            x, a = operand(mul)
            y, b = operand(add)
            if x == conv.output[0] and add.op_type == "Add" and y == mul.output[0]:
                w, bias = conv_weights(conv)
                w *= a
                bias *= a
                bias += b
                conv.output[0] = add.output[0]
                removed.update((id(mul), id(add)))
                rewrites += 1
        # Mul(c) -> Add(d) -> Conv, only without padding.
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if any(attrs.get("pads", ())) or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            continue
        add = producer.get(conv.input[0])
        if add is None or id(add) in removed or only_user(add.output[0]) is not conv:
            continue
        x, d = operand(add)
        mul = producer.get(x) if x is not None and add.op_type == "Add" else None
        if mul is None or id(mul) in removed or only_user(mul.output[0]) is not add:
            continue
        if mul.op_type != "Mul":
            continue
        h, c = operand(mul)
        if h is None:
            continue
        w, bias = conv_weights(conv)
        bias += d * w.sum(axis=(1, 2, 3))
        w *= c
        conv.input[0] = h
        removed.update((id(mul), id(add)))
        rewrites += 1

    # x * Clip(x + 3, 0, 6) / 6  ->  x * HardSigmoid(x)
    for add in nodes:
        if add.op_type != "Add" or id(add) in removed:
            continue
        x, three = operand(add)
        clip = only_user(add.output[0])
        if three != 3.0 or clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        if scalar(clip.input[1]) != 0.0 or scalar(clip.input[2]) != 6.0:
            continue
        mul = only_user(clip.output[0])
        if mul is None or mul.op_type != "Mul" or set(mul.input) != {x, clip.output[0]}:
            continue
        div = only_user(mul.output[0])
        if div is None or div.op_type != "Div" or div.input[0] != mul.output[0]:
            continue
        if scalar(div.input[1]) != 6.0:
            continue
        gate = add.output[0] + "_hardsigmoid"
        add.CopyFrom(helper.make_node("HardSigmoid", [x], [gate], alpha=1 / 6, beta=0.5))
        mul.input[:] = [x, gate]
        mul.output[0] = div.output[0]
        removed.update((id(clip), id(div)))
        rewrites += 1

    if not rewrites:
        return 0
    for i, (conv, w, b) in enumerate(weights.values()):
        w_name, b_name = f"folded_conv_{i}.w", f"folded_conv_{i}.b"
        graph.initializer.extend(
            [
                numpy_helper.from_array(w.astype(np.float32), w_name),
                numpy_helper.from_array(b.astype(np.float32), b_name),
            ]
        )
        conv.input[:] = [conv.input[0], w_name, b_name]
    kept = [n for n in nodes if id(n) not in removed]
    # Constants nothing reads any more (the folded scalars, the old weights).
    used = {name for n in kept for name in n.input} | graph_outputs
    kept = [n for n in kept if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)
    return rewrites


def _open_session(
    model_path: Path, *, threads: int, providers: Sequence[str], simplify: bool
) -> ort.InferenceSession:
    if not simplify:
        return create_session(model_path, threads=threads, providers=providers)
    model = onnx.load(str(model_path))
    if not fold_affine_ops(model):
        return create_session(model_path, threads=threads, providers=providers)
    return create_session(model.SerializeToString(), threads=threads, providers=providers)


class PPOCRRecognizer(BaseOCR):
    """Reads plate crops with a PP-OCR rec model and CTC decoding restricted to A-Z0-9.

    Crops are resized to the model's height keeping their aspect (``width_scale``
    squeezes them for speed), sorted by width so similar crops share a batch, and
    padded to the batch's widest. ``batch_size`` None means 1 on CPU-only
    providers and 8 otherwise. ``restrict`` limits decoding to A-Z0-9 with every
    other class counted as blank (``rest_to_blank``); ``beam_width`` 0 skips the
    beam search and reports only the best path's text as a candidate.
    ``simplify`` runs the model with its scalar affines and hard-swish folded (see
    :func:`fold_affine_ops`): same readings, about 30% less model time on CPU.
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
        simplify: bool = True,
    ) -> None:
        self._session: ort.InferenceSession | None = _open_session(
            Path(model_path), threads=threads, providers=providers, simplify=simplify
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
        self._mark_restrictions: dict[str, ctc.Restriction] = {}
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
        return self._probabilities(crops, self._restriction)

    def read_marks(self, crops: Sequence[np.ndarray], marks: str) -> list[str]:
        """Best-path text of each crop over the plate alphabet plus ``marks``, for the
        Chinese characters a cross-boundary plate carries around its registration."""
        restriction = self._mark_restrictions.get(marks)
        if restriction is None:
            restriction = ctc.restrict_charset(self._charset, PLATE_ALPHABET + marks, fold=_FOLD)
            self._mark_restrictions[marks] = restriction
        return [
            "".join(restriction.charset[c] for c, _, _ in ctc.best_path(p))
            for p in self._probabilities(crops, restriction)
        ]

    def _probabilities(
        self, crops: Sequence[np.ndarray], restriction: ctc.Restriction | None
    ) -> list[np.ndarray]:
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
                if restriction is not None:
                    p = ctc.apply_restriction(p, restriction, rest_to_blank=self.rest_to_blank)
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
