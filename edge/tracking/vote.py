"""The vote of a track's readings: :func:`vote` puts the readings together, character
by character and weighted by confidence, into one :class:`Consensus`, and
:func:`is_decided` says whether it is sure enough to go out before the track ends.
The tracker votes each track with it; `bench video` votes true boxes' readings the
same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.recognition.plateformat import PlateFormat
from edge.types import PlateText, TextCandidate

# Every position's support an early read needs: a few agreeing but doubtful readings
# (B read as 8 at 0.5) must not fix the read. 0.6 rather than 0.8: on generated passes
# (184, two sets of clips) it gives the same reads, wrong reads included, and the
# slowest 5% of passes are decided 0.2-1.3 s sooner.
DECIDE_MIN_SUPPORT = 0.6


@dataclass(frozen=True, slots=True)
class Consensus:
    """The voted text of a track's readings and how well they support it."""

    text: str
    confidence: float
    #: Readings whose own text equals ``text``.
    agreeing: int
    candidates: tuple[TextCandidate, ...]
    #: The least supported position's support (same scale as ``confidence``).
    weakest: float = 0.0
    #: Summed confidence of the readings of ``text`` less that of all other readings.
    margin: float = 0.0


def vote(
    readings: Sequence[PlateText], plate_format: PlateFormat | None = None
) -> Consensus | None:
    """Vote per character position, weighted by each reading's character confidences.

    Readings first vote on the length (weighted by confidence); among readings of the
    winning length, each position takes the character with the largest summed
    confidence. If that mix does not fit ``plate_format`` (two readings of the same
    length from different patterns), the whole reading with the largest total weight
    wins instead. ``confidence`` is the mean over positions of the winning
    character's summed confidence divided by the number of readings of that length:
    1.0 when every reading agrees with full confidence.
    """
    if not readings:
        return None
    by_length: dict[int, list[PlateText]] = defaultdict(list)
    for reading in readings:
        by_length[len(reading.text)].append(reading)
    length, group = max(
        by_length.items(), key=lambda kv: (sum(r.confidence for r in kv[1]), len(kv[1]))
    )
    weights: list[dict[str, float]] = [defaultdict(float) for _ in range(length)]
    for reading in group:
        for pos, (char, conf) in enumerate(
            zip(reading.text, reading.char_confidences, strict=True)
        ):
            weights[pos][char] += conf
    text = "".join(max(w.items(), key=lambda kv: kv[1])[0] for w in weights)
    support = [w[ch] / len(group) for w, ch in zip(weights, text, strict=True)]

    totals: dict[str, float] = defaultdict(float)
    for reading in readings:
        totals[reading.text] += reading.confidence
    if plate_format is not None and not plate_format.matches(text):
        text = max(totals.items(), key=lambda kv: kv[1])[0]
        agreeing = [r for r in group if r.text == text] or [r for r in readings if r.text == text]
        support = [
            sum(r.char_confidences[pos] for r in agreeing) / max(len(group), len(agreeing))
            for pos in range(len(text))
        ]
    confidence = float(np.mean(support)) if support else 0.0
    totals.setdefault(text, 0.0)
    ranked = sorted(totals.items(), key=lambda kv: (kv[0] != text, -kv[1]))
    n = len(readings)
    candidates = tuple(TextCandidate(t, confidence if t == text else w / n) for t, w in ranked[:5])
    agreeing_count = sum(1 for r in readings if r.text == text)
    weakest = float(min(support)) if support else 0.0
    margin = 2 * totals[text] - sum(totals.values())
    return Consensus(text, confidence, agreeing_count, candidates, weakest, margin)


def is_decided(consensus: Consensus | None, decide_margin: float) -> bool:
    """Early read: the readings of the consensus outweigh all others by the margin
    (two sure readings, three fair ones, or more when some disagree), and every
    character is well supported. Evidence, not a count of readings: a plate read sure
    at once goes out after two frames, a doubtful one waits for more. A margin of 0
    never decides early."""
    if consensus is None or decide_margin <= 0:
        return False
    return consensus.margin >= decide_margin and consensus.weakest >= DECIDE_MIN_SUPPORT
