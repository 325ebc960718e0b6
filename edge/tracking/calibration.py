"""A read's confidence that means what it says: reads published at 0.9 are right about
90% of the time.

The tracker's vote gives an *evidence score* per read: the vote's own confidence (how
well every character is supported, 0-1) times the share of the track's readings that
did not read another text (:func:`evidence_score`). Neither is a probability; on clips
made from real photos both wrong and right reads scored 0.99 or more. A
:class:`ConfidenceCalibration` maps the score to the share of reads that were right at
that score, by isotonic regression (:func:`fit_isotonic`: monotone, no shape assumed)
over reads of clips made from real labelled photos. The shipped table,
``edge/data/confidence_calibration.json``, is made by `lpr-edge bench calibrate`
(``edge/bench/calibrate.py``) from the US and European dev photos, so the Hong Kong
dev photos stay unseen and measure it.

Nothing here imports from the rest of the package but its plain types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge.types import TextCandidate

CALIBRATION_FILE = "confidence_calibration.json"
FORMAT = "lpr.confidence-calibration/1"


def evidence_score(text: str, confidence: float, candidates: Sequence[TextCandidate]) -> float:
    """The vote's confidence in ``text`` times the share of the track's readings that
    did not read another text (a rival read by half the frames halves the score)."""
    rival = max((c.confidence for c in candidates if c.text != text), default=0.0)
    return float(confidence) * max(0.0, 1.0 - float(rival))


@dataclass(frozen=True)
class ConfidenceCalibration:
    """Evidence score -> share of reads right, piecewise linear through ``points``
    (score, share), scores increasing; flat beyond the ends."""

    points: tuple[tuple[float, float], ...]
    #: What it was fitted on (folders, read counts), for the record.
    fitted_on: str = ""

    def __post_init__(self) -> None:
        xs = [x for x, _ in self.points]
        ys = [y for _, y in self.points]
        if not self.points or xs != sorted(xs) or ys != sorted(ys):
            raise ValueError("calibration points must be non-empty and increase in both")
        if not all(0.0 <= v <= 1.0 for v in xs + ys):
            raise ValueError("calibration points must lie in [0, 1]")

    def __call__(self, score: float) -> float:
        xs, ys = zip(*self.points, strict=True)
        return round(float(np.interp(score, xs, ys)), 4)

    @classmethod
    def identity(cls) -> ConfidenceCalibration:
        return cls(((0.0, 0.0), (1.0, 1.0)), "none: the evidence score as it is")

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "fitted_on": self.fitted_on,
                    "points": [[round(x, 4), round(y, 4)] for x, y in self.points],
                },
                indent=1,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> ConfidenceCalibration:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        return cls(
            tuple((float(x), float(y)) for x, y in data["points"]), data.get("fitted_on", "")
        )

    @classmethod
    def load(cls, path: Path | str | None = None) -> ConfidenceCalibration:
        """From ``path``, or the shipped table."""
        if path is None:
            text = resources.files("edge.data").joinpath(CALIBRATION_FILE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_json(text)


def fit_isotonic(
    samples: Sequence[tuple[float, bool]], *, min_reads: int = 20
) -> tuple[tuple[float, float], ...]:
    """Points of the monotone (non-decreasing) fit of right/wrong against score: pool
    adjacent violators, each final block holding at least ``min_reads`` reads (a
    share over fewer says little), each block a point at its mean score."""
    if not samples:
        raise ValueError("no reads to calibrate on")
    ordered = sorted(samples, key=lambda s: s[0])
    # Blocks: [sum of scores, sum of right, count]
    blocks: list[list[float]] = []
    for score, right in ordered:
        blocks.append([score, float(right), 1.0])
        while len(blocks) > 1 and (
            blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]
            or blocks[-2][2] < min_reads
        ):
            s, r, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += r
            blocks[-1][2] += n
    # The last block may be small: fold it into the one before.
    while len(blocks) > 1 and blocks[-1][2] < min_reads:
        s, r, n = blocks.pop()
        blocks[-1][0] += s
        blocks[-1][1] += r
        blocks[-1][2] += n
    points = [(b[0] / b[2], b[1] / b[2]) for b in blocks]
    # Anchor the ends so every score maps inside the fitted range.
    if points[0][0] > 0.0:
        points.insert(0, (0.0, min(points[0][1], 0.0 if len(points) > 1 else points[0][1])))
    if points[-1][0] < 1.0:
        points.append((1.0, points[-1][1]))
    return tuple(points)
