"""The one interface every OCR engine implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from edge.types import OcrResult


class BaseOCR(ABC):
    """Reads the text of plate crops.

    Engines are resources: the owner constructs one, calls :meth:`read` as often as it
    likes and calls :meth:`close` (or uses ``with``) when done.
    """

    #: Name used in config (``[recognition] ocr``) and in benchmark output.
    name: str = ""

    @abstractmethod
    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        """Read a batch of BGR uint8 plate crops; one result per crop, in order."""

    def read_marks(self, crops: Sequence[np.ndarray], marks: str) -> list[str] | None:
        """Best-path text of each crop over the plate alphabet plus the characters in
        ``marks`` (a cross-boundary plate's 粤, 港, 澳), or None for an engine whose
        model does not know them."""
        return None

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release the engine's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
