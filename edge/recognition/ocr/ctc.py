"""CTC decoding of a recogniser's per-frame class probabilities (pure numpy).

Every function takes one ``(T, C)`` probability matrix (rows sum to about 1) and a
``charset`` where ``charset[i]`` is the text of class ``i``; class ``blank`` (0 by
convention) is the CTC blank. Nothing here knows about plates: restricting the
alphabet is a matrix operation the caller chooses, so the same code decodes any
line of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.types import CharChoice, OcrResult, TextCandidate


@dataclass(frozen=True, slots=True)
class Restriction:
    """A subset of a model's classes: the matrix columns to keep and their text.

    Built once per engine with :func:`restrict_charset`; applying it to each output
    is a column gather and a few sums.
    """

    columns: np.ndarray  # first entry is the blank
    charset: tuple[str, ...]
    #: Columns of the *restricted* matrix that several original classes fold into
    #: (e.g. ``o`` into ``O``), as (target column, source columns) pairs.
    folds: tuple[tuple[int, tuple[int, ...]], ...] = ()
    #: ``folds`` grouped by their number of sources, as (targets, sources (n, k))
    #: arrays, so each group is one gather and one sum.
    fold_groups: tuple[tuple[np.ndarray, np.ndarray], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_count: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for target, sources in self.folds:
            by_count.setdefault(len(sources), []).append((target, sources))
        groups = tuple(
            (
                np.array([t for t, _ in group], dtype=np.intp),
                np.array([src for _, src in group], dtype=np.intp),
            )
            for _, group in sorted(by_count.items())
        )
        object.__setattr__(self, "fold_groups", groups)


def restrict_charset(
    charset: Sequence[str],
    allowed: Iterable[str],
    *,
    blank: int = 0,
    fold: dict[str, str] | None = None,
) -> Restriction:
    """Choose the blank plus ``allowed`` characters of ``charset``.

    ``fold`` maps further characters of the model onto allowed ones (``{"o": "O"}``):
    their probability is added to the target rather than thrown away, because a
    model trained on general text often spreads a plate letter over its lower-case
    twin.
    """
    index = {ch: i for i, ch in enumerate(charset) if i != blank}
    keep: list[int] = [blank]
    text: list[str] = [""]
    for ch in dict.fromkeys(allowed):
        if ch in index:
            keep.append(index[ch])
            text.append(ch)
    position = {ch: k for k, ch in enumerate(text) if k}
    folds: dict[int, list[int]] = {}
    for src, dst in (fold or {}).items():
        if src in index and dst in position and index[src] not in keep:
            folds.setdefault(position[dst], []).append(index[src])
    return Restriction(
        columns=np.asarray(keep, dtype=np.intp),
        charset=tuple(text),
        folds=tuple((k, tuple(v)) for k, v in sorted(folds.items())),
    )


def apply_restriction(
    probs: np.ndarray, restriction: Restriction, *, rest_to_blank: bool = True
) -> np.ndarray:
    """Keep only the restriction's classes; each frame still sums to 1.

    With ``rest_to_blank`` the probability of every dropped class goes to the blank:
    a frame the model gave to a separator dot, a coat of arms read as a CJK glyph or
    a sticker stays "no plate character" instead of promoting its runner-up, which
    is how an emblem between letters turns into a spurious 8 or 0. Without it the
    kept classes are simply renormalised.
    """
    out = probs[..., restriction.columns].astype(np.float32, copy=True)
    for targets, sources in restriction.fold_groups:
        out[..., targets] += probs[..., sources].sum(axis=-1)
    total = out.sum(axis=-1, keepdims=True)
    if rest_to_blank:
        out[..., 0] += np.clip(1.0 - total[..., 0], 0.0, None)
        return out
    np.maximum(total, 1e-12, out=total)
    out /= total
    return out


def best_path(probs: np.ndarray, *, blank: int = 0) -> list[tuple[int, int, int]]:
    """Greedy CTC path as ``(class, first frame, end frame)`` runs.

    Consecutive frames with the same arg-max collapse into one character; blanks
    separate characters and are dropped, so "A A" needs a blank between to count twice.
    """
    if probs.ndim != 2:
        raise ValueError(f"expected a (T, C) matrix, got shape {probs.shape}")
    # A few dozen frames: a plain loop is several times cheaper than the numpy
    # calls (diff, nonzero, append) that would vectorise it.
    ids = probs.argmax(axis=1).tolist()
    runs = []
    start = 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or ids[t] != ids[start]:
            if ids[start] != blank:
                runs.append((ids[start], start, t))
            start = t
    return runs


def greedy_decode(
    probs: np.ndarray, charset: Sequence[str], *, blank: int = 0, topk: int = 3
) -> tuple[CharChoice, ...]:
    """Best-path characters, each with up to ``topk`` alternatives.

    A character's probability is the highest probability its class reached within
    its run of frames; the alternatives are the other non-blank classes ranked by
    their own highest probability over the same frames, which is where a confusable
    letter (0/O, 8/B) shows up.
    """
    return _greedy(probs, charset, blank, topk)[0]


def _greedy(
    probs: np.ndarray, charset: Sequence[str], blank: int, topk: int
) -> tuple[tuple[CharChoice, ...], list[int]]:
    """:func:`greedy_decode`'s characters and the best path's classes, for all
    characters at once (one reduction and one partition instead of one per run)."""
    path = best_path(probs, blank=blank)
    if not path:
        return (), []
    # Each run's column maxima: reduceat over [start, end) pairs; the odd rows are
    # the gaps between runs. Max is exact, so this equals a max per run.
    bounds = [t for _, t0, t1 in path for t in (t0, t1)]
    if bounds[-1] == len(probs):
        bounds.pop()
    peak = np.maximum.reduceat(probs, bounds, axis=0)[::2].astype(np.float64)
    peak[:, blank] = -1.0
    n = min(max(1, int(topk)), peak.shape[1] - 1)
    # argpartition works row by row, so each row is partitioned exactly as the
    # row alone would be: ties between alternatives resolve as they always did.
    top = np.argpartition(-peak, n - 1, axis=1)[:, :n]
    rows = np.arange(len(peak))[:, None]
    values = peak[rows, top]
    order = np.argsort(-values, axis=1, kind="stable")
    top = top[rows, order].tolist()
    values = values[rows, order].tolist()
    choices = []
    for ids, ps in zip(top, values, strict=True):
        # The blank (-1) fails p >= 0, and so does NaN.
        kept = [(i, p) for i, p in zip(ids, ps, strict=True) if p >= 0]
        choices.append(CharChoice(tuple(charset[i] for i, _ in kept), tuple(p for _, p in kept)))
    return tuple(choices), [cls for cls, _, _ in path]


def _beam_mass(item: tuple[tuple[int, ...], Sequence[float]]) -> float:
    return item[1][0] + item[1][1]


def beam_search(
    probs: np.ndarray,
    charset: Sequence[str],
    *,
    blank: int = 0,
    beam_width: int = 8,
    top_n: int = 5,
    prune: float = 1e-3,
) -> list[TextCandidate]:
    """CTC prefix beam search: the ``top_n`` most probable strings.

    Unlike the best path, a string's probability here sums over all frame
    alignments, so a doubled letter whose separating blank is weak ("300" read as
    "30") still surfaces as a candidate. Classes below ``prune`` in a frame are not
    extended, which keeps this cheap on a small alphabet. ``confidence`` is the
    string's total probability.
    """
    if probs.ndim != 2:
        raise ValueError(f"expected a (T, C) matrix, got shape {probs.shape}")
    # The classes each frame extends, found for all frames at once; frames where
    # only the blank is likely (most of them) just scale every beam alike, which
    # keeps their order, so they skip the extension loop.
    extend = probs >= prune
    extend[:, blank] = False
    rows, cols = np.nonzero(extend)
    bounds = np.searchsorted(rows, np.arange(probs.shape[0] + 1)).tolist()
    cols_list = cols.tolist()
    frames = probs.tolist()
    # prefix -> (P ending in blank, P ending in its last character)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}
    for t, frame in enumerate(frames):
        p_blank = frame[blank]
        active = cols_list[bounds[t] : bounds[t + 1]]
        if not active:
            beams = {prefix: ((pb + pnb) * p_blank, 0.0) for prefix, (pb, pnb) in beams.items()}
            continue
        # The bookkeeping is written out inline (no helper call per extension):
        # this loop runs for every beam and class of every active frame. Sums are
        # formed in the same order as ever, zeros included, so scores are unchanged.
        nxt: dict[tuple[int, ...], list[float]] = {}
        get = nxt.get
        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            entry = get(prefix)
            if entry is None:
                nxt[prefix] = entry = [total * p_blank, 0.0]
            else:
                entry[0] += total * p_blank
                entry[1] += 0.0
            last = prefix[-1] if prefix else None
            for c in active:
                p = frame[c]
                if c == last:
                    # Staying on the same character extends it; a new copy needs a blank.
                    entry[0] += 0.0
                    entry[1] += pnb * p
                    grown, mass = (*prefix, c), pb * p
                else:
                    grown, mass = (*prefix, c), total * p
                other = get(grown)
                if other is None:
                    nxt[grown] = [0.0, mass]
                else:
                    other[0] += 0.0
                    other[1] += mass
        ranked = sorted(nxt.items(), key=_beam_mass, reverse=True)
        beams = {k: (v[0], v[1]) for k, v in ranked[: max(1, beam_width)]}
    ranked = sorted(beams.items(), key=_beam_mass, reverse=True)
    return [
        TextCandidate("".join(charset[i] for i in prefix), float(pb + pnb))
        for prefix, (pb, pnb) in ranked[: max(1, top_n)]
    ]


def string_probability(probs: np.ndarray, labels: Sequence[int], *, blank: int = 0) -> float:
    """P(labels | frames) summed over every CTC alignment (the forward algorithm).

    Puts any string, however it was proposed, on the same scale as the beam's
    candidates.
    """
    n = len(labels)
    if n == 0:
        return float(np.prod(probs[:, blank], dtype=np.float64))
    ext = np.full(2 * n + 1, blank, dtype=np.intp)
    ext[1::2] = labels
    # A state may skip the blank before it unless it repeats the previous label.
    skip = np.zeros(2 * n + 1, dtype=bool)
    skip[3::2] = np.asarray(labels[1:]) != np.asarray(labels[:-1])
    alpha = np.zeros(2 * n + 1, dtype=np.float64)
    alpha[0] = probs[0, blank]
    alpha[1] = probs[0, ext[1]]
    for t in range(1, probs.shape[0]):
        prev = alpha
        alpha = prev.copy()
        alpha[1:] += prev[:-1]
        alpha[2:] += np.where(skip[2:], prev[:-2], 0.0)
        alpha *= probs[t, ext]
    return float(alpha[-1] + alpha[-2])


def decode(
    probs: np.ndarray,
    charset: Sequence[str],
    *,
    blank: int = 0,
    topk: int = 3,
    beam_width: int = 8,
    top_n: int = 5,
) -> OcrResult:
    """Everything an engine reports for one crop: best path, alternatives, candidates.

    ``confidence`` is the lowest character probability of the best path (0 for an
    empty read): a plate is only as readable as its worst character. Candidates are
    the beam's strings plus the best path's own text, each scored by its total
    CTC probability and sorted best first.
    """
    chars, path = _greedy(probs, charset, blank, topk)
    text = "".join(c.best for c in chars)
    confidence = min((c.prob for c in chars), default=0.0)
    pool: dict[str, float] = {}
    if beam_width > 0:
        for cand in beam_search(probs, charset, blank=blank, beam_width=beam_width, top_n=top_n):
            pool[cand.text] = cand.confidence
    if text not in pool:
        pool[text] = string_probability(probs, path, blank=blank)
    candidates = tuple(
        TextCandidate(t, p) for t, p in sorted(pool.items(), key=lambda kv: kv[1], reverse=True)
    )
    return OcrResult(text=text, confidence=confidence, chars=chars, candidates=candidates)
