"""The ``easyocr`` OCR engine: EasyOCR's ``english_g2`` recogniser on plate crops.

Two backends run the same network with the same preprocessing and decoding:

* ``onnx`` (default): the model converted by
  :func:`edge.recognition.ocr.easyocr_convert.convert_english_g2`, run with onnxruntime. Needs
  neither PyTorch nor the ``easyocr`` package.
* ``torch``: the ``easyocr`` package itself (``pip install 'lpr-edge[easyocr]'``),
  loading the ``.pth`` weights from the local model directory with downloads off.
  Kept as a reference for the conversion; in float mode it agrees with ``onnx`` to
  about 1e-5 in probability.

Plate text detection is ours, so easyocr's CRAFT detector is never loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.recognition.ocr.base import BaseOCR
from edge.recognition.ocr.easyocr_onnx import CHARACTERS, PTH_NAME, EnglishG2Base, EnglishG2Onnx
from edge.types import OcrResult

log = logging.getLogger("edge.ocr.easyocr_engine")

BACKENDS = ("onnx", "torch")


class _EnglishG2Torch(EnglishG2Base):
    """english_g2 through the ``easyocr`` package's PyTorch model."""

    def __init__(
        self, model_dir: Path, *, threads: int = 0, quantize: bool = False, **options
    ) -> None:
        try:
            import easyocr
            import torch
        except ImportError as exc:
            raise ImportError(
                "the easyocr engine's torch backend needs the easyocr package: "
                "pip install 'lpr-edge[easyocr]', or use backend='onnx' (no PyTorch)"
            ) from exc
        if not (model_dir / PTH_NAME).is_file():
            raise FileNotFoundError(f"{model_dir / PTH_NAME} missing; run `lpr-edge models fetch`")
        if threads > 0:
            torch.set_num_threads(int(threads))
        # user_network_directory is pointed at the model directory so that easyocr
        # does not create ~/.EasyOCR on the box. quantize=False keeps the float
        # weights: easyocr's default int8 LSTMs change about a third of readings
        # relative to the float network, which would make the two backends disagree.
        reader = easyocr.Reader(
            ["en"],
            gpu=False,
            model_storage_directory=str(model_dir),
            user_network_directory=str(model_dir),
            download_enabled=False,
            detector=False,
            recog_network="english_g2",
            verbose=False,
            quantize=quantize,
        )
        self._torch = torch
        self._model = reader.recognizer.eval()
        charset = ["", *reader.character]
        if "".join(reader.character) != CHARACTERS:
            log.warning("easyocr's english_g2 character list differs from the one converted")
        super().__init__(charset, **options)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("engine is closed")
        torch = self._torch
        with torch.no_grad():
            logits = self._model(torch.from_numpy(batch), None)
            return torch.softmax(logits, dim=2).numpy()

    def close(self) -> None:
        self._model = None


class EasyOCRRecognizer(BaseOCR):
    """EasyOCR ``english_g2`` behind :class:`BaseOCR`.

    ``model_path`` is the verified model file for the backend: ``english_g2.onnx``
    (made by ``lpr-edge models fetch``) for ``onnx``, ``english_g2.pth`` for ``torch``.

    Keywords passed on to :class:`edge.recognition.ocr.easyocr_onnx.EnglishG2Base`:
    ``preprocess`` (:class:`~edge.recognition.ocr.easyocr_onnx.Preprocess`), ``allowed``
    (characters to keep, default 0-9A-Z; ``None`` keeps all 96 classes),
    ``fold_case``, ``fold_bars``, ``max_batch``, ``topk``, ``beam_width``, ``top_n``.
    """

    name = "easyocr"

    def __init__(
        self,
        model_path: Path,
        backend: str = "onnx",
        *,
        threads: int = 0,
        providers: Sequence[str] = ("cpu",),
        quantize: bool = False,
        **options,
    ) -> None:
        model_path = Path(model_path)
        self.backend = backend
        if backend == "onnx":
            self._impl: EnglishG2Base = EnglishG2Onnx(
                model_path, threads=threads, providers=providers, **options
            )
        elif backend == "torch":
            self._impl = _EnglishG2Torch(
                model_path.parent, threads=threads, quantize=quantize, **options
            )
        else:
            raise ValueError(f"unknown easyocr backend {backend!r}; choose one of {BACKENDS}")

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        return self._impl.read(crops)

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame softmax over blank + the 96 characters, one ``(T, 97)`` per crop."""
        return self._impl.probabilities(crops)

    def close(self) -> None:
        self._impl.close()
