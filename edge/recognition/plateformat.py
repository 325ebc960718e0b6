"""Plate-format rules: which strings are plates, and the best plate in an OCR read.

Formats are data (``edge/data/plate_formats.toml`` or a user TOML file). A pattern
is written in the OpenALPR style, one symbol per character position:

* ``@`` any letter A-Z, ``#`` any digit 0-9, ``?`` any letter or digit;
* ``[...]`` a class such as ``[A-HJ-NP-Z]`` or ``[0-9A-C]``;
* a literal letter or digit matches only itself;
* ``{n}`` or ``{m,n}`` after a symbol repeats it (``@{1,2}#{1,4}`` expands into the
  eight fixed-length patterns it stands for; ``{0,n}`` makes a symbol optional).

A profile holds groups of patterns, each with a ``weight`` (how likely a plate of
that group is, relative to the profile's main shapes), so a catch-all group for
personalised marks can exist without swallowing junk around a standard plate.

Reading a plate out of an :class:`~edge.types.OcrResult` means choosing, over every
pattern and every whole-string candidate, the assignment of read characters to
pattern positions with the best score:

* a position accepts the read character, one of its recogniser alternatives, or a
  look-alike of either (0/O/D/Q, 1/I/L/T, 2/Z, 5/S, 6/G, 8/B, 4/A), scored by its
  probability with a penalty for a look-alike;
* characters outside the chosen pattern are dropped, cheaply at the ends (bolts,
  stickers, the country letter of an EU strip, a state name) and dearly in the
  middle (an emblem read as a character).
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from edge.platetext import ALNUM, DIGITS, LETTERS, normalize
from edge.types import CharChoice, OcrResult, PlateText, TextCandidate

#: Characters the recognisers confuse, by shape, and the probability factor a
#: position pays for reading one as the other. 0/O and 1/I are drawn almost alike
#: in plate fonts (recognisers are confidently wrong about them), the middle tier
#: differs in a stroke or a corner, the last only when the image is poor.
DEFAULT_LOOKALIKES: tuple[tuple[str, float], ...] = (
    ("0O", 0.6),
    ("1I", 0.6),
    ("0DQ", 0.2),
    ("ODQ", 0.2),
    ("8B", 0.2),
    ("5S", 0.2),
    ("2Z", 0.2),
    ("6G", 0.2),
    ("1LT", 0.1),
    ("ILT", 0.1),
    ("4A", 0.1),
    ("7T", 0.1),
)


def _lookalike_table(
    groups: Sequence[tuple[str, float]], same_glyph: Sequence[str] = ()
) -> dict[str, dict[str, tuple[float, float]]]:
    """char -> {look-alike: (score factor, confidence factor)}."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for chars, factor in groups:
        for a in chars:
            for b in chars:
                if a != b and factor > table.setdefault(a, {}).get(b, (0.0, 0.0))[0]:
                    same = any(a in g and b in g for g in same_glyph)
                    table[a][b] = (float(factor), 1.0 if same else float(factor))
    return table


class PatternError(ValueError):
    """A plate pattern or profile that cannot be understood."""


@dataclass(frozen=True, slots=True)
class PlatePattern:
    """One fixed-length plate shape: the characters allowed at each position."""

    source: str
    slots: tuple[frozenset[str], ...]
    weight: float = 1.0
    group: str = ""

    def __len__(self) -> int:
        return len(self.slots)

    def matches(self, text: str) -> bool:
        return len(text) == len(self.slots) and all(
            c in s for c, s in zip(text, self.slots, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Scoring:
    """Penalties (probability factors, 0..1) used when fitting a read to a pattern."""

    #: (characters, factor): reading any of ``characters`` as another of them.
    lookalikes: tuple[tuple[str, float], ...] = DEFAULT_LOOKALIKES
    #: Look-alikes drawn as the same glyph on plates: resolving one by its position
    #: still costs ``lookalikes``' factor when choosing among readings (a direct
    #: read is better evidence) but does not lower the reported confidence.
    same_glyph: tuple[str, ...] = ("0O", "1I")
    #: Dropping a character before or after the plate, and between plate characters.
    drop_edge: float = 0.4
    drop_inner: float = 0.2
    #: What is left of a drop factor when the dropped character was read with
    #: certainty: junk (bolts, emblems, strip letters) is mostly read with low
    #: confidence, so dropping a sure character costs more.
    drop_sure: float = 0.1
    #: At most this many characters dropped at the ends, and in the middle.
    max_drop_edge: int = 3
    max_drop_inner: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "lookalikes", tuple((str(c).upper(), float(f)) for c, f in self.lookalikes)
        )
        object.__setattr__(self, "same_glyph", tuple(str(g).upper() for g in self.same_glyph))
        for chars, factor in self.lookalikes:
            if not 0 < factor <= 1 or not set(chars) <= ALNUM:
                raise PatternError(f"bad look-alike group {chars!r}: {factor}")
        for name in ("drop_edge", "drop_inner", "drop_sure"):
            if not 0 < getattr(self, name) <= 1:
                raise PatternError(f"scoring {name} must be in (0, 1]")

    def drop(self, prob: float, *, inner: bool) -> float:
        base = self.drop_inner if inner else self.drop_edge
        return base * (1.0 - (1.0 - self.drop_sure) * min(1.0, max(0.0, prob)))


@dataclass(frozen=True, slots=True)
class PlateFormat:
    """A named set of plate patterns (a country or region profile)."""

    name: str
    patterns: tuple[PlatePattern, ...]
    scoring: Scoring = field(default_factory=Scoring)

    def __post_init__(self) -> None:
        if not self.patterns:
            raise PatternError(f"plate format {self.name!r} has no patterns")

    def matches(self, text: str) -> bool:
        return any(p.matches(text) for p in self.patterns)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(sorted({len(p) for p in self.patterns}))


# --------------------------------------------------------------------------- parsing

#: A pattern's {m,n} repeats may stand for at most this many fixed shapes.
MAX_EXPANSIONS = 4096

_TOKEN = re.compile(r"(\[[^\]]*\]|[@#?]|[A-Z0-9])(\{(\d+)(?:,(\d+))?\})?")


def _parse_class(body: str, pattern: str) -> frozenset[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if not (lo in ALNUM and hi in ALNUM and lo <= hi and lo.isdigit() == hi.isdigit()):
                raise PatternError(f"bad range {lo}-{hi} in pattern {pattern!r}")
            chars.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
            i += 3
        else:
            if body[i] not in ALNUM:
                raise PatternError(f"bad character {body[i]!r} in class of pattern {pattern!r}")
            chars.add(body[i])
            i += 1
    if not chars:
        raise PatternError(f"empty character class in pattern {pattern!r}")
    return frozenset(chars)


def parse_pattern(pattern: str, *, weight: float = 1.0, group: str = "") -> list[PlatePattern]:
    """Every fixed-length pattern ``pattern`` stands for (see the module doc)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PatternError(f"empty plate pattern {pattern!r}")
    text = pattern.strip().upper()
    pos = 0
    options: list[list[tuple[frozenset[str], ...]]] = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PatternError(
                f"cannot parse plate pattern {pattern!r} at position {pos} ({text[pos:]!r}); "
                "use @ # ? [A-Z] classes, letters, digits and {m,n}"
            )
        sym, _, lo, hi = m.groups()
        if sym == "@":
            cls = LETTERS
        elif sym == "#":
            cls = DIGITS
        elif sym == "?":
            cls = ALNUM
        elif sym.startswith("["):
            cls = _parse_class(sym[1:-1], pattern)
        else:
            cls = frozenset(sym)
        n_lo = int(lo) if lo is not None else 1
        n_hi = int(hi) if hi is not None else n_lo
        if n_hi < n_lo or n_hi > 16:
            raise PatternError(f"bad repeat {{{lo},{hi}}} in pattern {pattern!r}")
        options.append([(cls,) * n for n in range(n_lo, n_hi + 1)])
        pos = m.end()
    if math.prod(len(o) for o in options) > MAX_EXPANSIONS:
        raise PatternError(f"plate pattern {pattern!r} expands to too many shapes")
    out: dict[tuple[frozenset[str], ...], PlatePattern] = {}
    for combo in itertools.product(*options):
        slots = tuple(s for part in combo for s in part)
        if slots and slots not in out:
            out[slots] = PlatePattern(pattern, slots, float(weight), group)
    if not out:
        raise PatternError(f"plate pattern {pattern!r} can only be empty")
    return list(out.values())


def make_format(
    name: str,
    groups: Iterable[tuple[str, float, Sequence[str]]],
    scoring: Scoring | None = None,
) -> PlateFormat:
    """A format from ``(group name, weight, patterns)`` triples.

    A fixed shape listed in several groups keeps its highest weight.
    """
    best: dict[tuple[frozenset[str], ...], PlatePattern] = {}
    for group, weight, patterns in groups:
        if not 0 < float(weight) <= 1:
            raise PatternError(f"weight of group {group!r} in {name!r} must be in (0, 1]")
        if isinstance(patterns, str):
            raise PatternError(f"patterns of group {group!r} in {name!r} must be a list")
        for pattern in patterns:
            for p in parse_pattern(pattern, weight=weight, group=group):
                if p.slots not in best or best[p.slots].weight < p.weight:
                    best[p.slots] = p
    return PlateFormat(name, tuple(best.values()), scoring or Scoring())


def _format_from_table(name: str, table: dict) -> PlateFormat:
    if not isinstance(table, dict):
        raise PatternError(f"profile {name!r} must be a table")
    groups = []
    if "patterns" in table:
        groups.append(("main", 1.0, table["patterns"]))
    for g in table.get("groups", []):
        try:
            groups.append((str(g["name"]), float(g.get("weight", 1.0)), g["patterns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PatternError(
                f"a group in profile {name!r} needs a name, patterns and a numeric weight"
            ) from exc
    if not groups:
        raise PatternError(f"profile {name!r} has neither patterns nor groups")
    try:
        scoring = Scoring(**table["scoring"]) if "scoring" in table else None
    except TypeError as exc:
        raise PatternError(f"bad [scoring] in profile {name!r}: {exc}") from exc
    return make_format(name, groups, scoring)


def _builtin_tables() -> dict:
    text = resources.files("edge").joinpath("data/plate_formats.toml").read_text("utf-8")
    return tomllib.loads(text)


def builtin_formats() -> tuple[str, ...]:
    return tuple(_builtin_tables())


@lru_cache(maxsize=32)
def _load_cached(name_or_path: str) -> PlateFormat:
    tables = _builtin_tables()
    if name_or_path in tables:
        return _format_from_table(name_or_path, tables[name_or_path])
    path = Path(name_or_path)
    if path.suffix.lower() != ".toml" or not path.is_file():
        raise PatternError(
            f"unknown plate format {name_or_path!r}: use one of {', '.join(tables)} "
            "or the path of a TOML profile file"
        )
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PatternError(f"{path}: {exc}") from exc
    # A file holds either one profile at top level or several named tables.
    if "patterns" in data or "groups" in data:
        return _format_from_table(path.stem, data)
    if len(data) == 1:
        ((name, table),) = data.items()
        return _format_from_table(name, table)
    raise PatternError(f"{path}: expected one profile, found tables {', '.join(data)}")


def load_format(name_or_path: str | Path) -> PlateFormat:
    """A built-in profile by name (``hk``, ``eu``, ``us``, ``br``, ``any``) or a TOML file."""
    return _load_cached(str(name_or_path))


# --------------------------------------------------------------------------- matching


_Options = dict[str, tuple[float, float]]


def _slot_options(
    choices: Sequence[tuple[str, float]], lookalikes: dict[str, dict[str, tuple[float, float]]]
) -> _Options:
    """Each character a read position could stand for: (score, confidence)."""
    opts: _Options = {}
    for ch, p in choices:
        ch = ch.upper()
        if ch in ALNUM and p > opts.get(ch, (0.0, 0.0))[0]:
            opts[ch] = (p, p)
    for ch, (p, _) in list(opts.items()):
        for alt, (factor, conf) in lookalikes.get(ch, {}).items():
            if p * factor > opts.get(alt, (0.0, 0.0))[0]:
                opts[alt] = (p * factor, p * conf)
    return opts


#: Whole-string candidates considered besides the best path, and how unlikely
#: (relative to the most likely string) a candidate may be before it is ignored.
MAX_CANDIDATE_READS = 4
MIN_CANDIDATE_RATIO = 0.02

_ALPHABET = "".join(sorted(ALNUM))
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
#: ASCII code of each alphabet index: a fit's text is one gather and a decode.
_CODES = np.frombuffer(_ALPHABET.encode("ascii"), dtype=np.uint8)


@dataclass(slots=True)
class _Read:
    """One whole-string reading, ready for matching: per position and alphabet
    character, the score and confidence :func:`_slot_options` gives it (0 if none)."""

    best: str
    probs: list[float]
    score: np.ndarray  # (n, len(_ALPHABET))
    conf: np.ndarray
    prior: float  # log factor for the reading itself (1 for the best path)


def _reads(result: OcrResult, compiled: _Compiled) -> list[_Read]:
    reads: list[_Read] = []
    kept: list[CharChoice] = [c for c in result.chars if c.best.upper() in ALNUM]
    if kept:
        score = np.zeros((len(kept), len(_ALPHABET)))
        conf = np.zeros_like(score)
        for i, c in enumerate(kept):
            choices = list(zip(c.chars, c.probs, strict=False))
            for ch, (p, cf) in _slot_options(choices, compiled.lookalikes).items():
                score[i, _INDEX[ch]] = p
                conf[i, _INDEX[ch]] = cf
        reads.append(
            _Read("".join(c.best.upper() for c in kept), [c.prob for c in kept], score, conf, 0.0)
        )
    seen = {r.best for r in reads}
    top = max((c.confidence for c in result.candidates), default=0.0)
    for cand in result.candidates:
        if len(reads) > MAX_CANDIDATE_READS:
            break
        text = normalize(cand.text)
        if not text or text in seen or cand.confidence < MIN_CANDIDATE_RATIO * top:
            continue
        seen.add(text)
        # No per-character detail: spread the string's probability evenly, and
        # rank it against the best candidate by their probability ratio.
        p = min(1.0, cand.confidence ** (1.0 / len(text)))
        if p > 0:
            # One choice per position: its options are p times a fixed row, which
            # is the same arithmetic _slot_options does one character at a time.
            idx = [_INDEX[c] for c in text]
            score, conf = p * compiled.single_score[idx], p * compiled.single_conf[idx]
        else:
            score = np.zeros((len(text), len(_ALPHABET)))
            conf = np.zeros_like(score)
        reads.append(
            _Read(text, [p] * len(text), score, conf, math.log(min(1.0, cand.confidence / top)))
        )
    return reads


@dataclass(frozen=True, slots=True)
class _Group:
    """Every (window of kept read positions, pattern) pair of one pattern length."""

    patterns: tuple[PlatePattern, ...]
    log_w: np.ndarray  # (P,)
    keep: np.ndarray  # (K, L) read positions of each window
    edge: np.ndarray  # (K, n) positions each window drops at the ends
    inner: np.ndarray  # (K, n) and in the middle
    #: Flat indices into an (n, classes) table, laid out (P, L, K): gathering with
    #: it and viewing the result as (K, P, L) gives the very memory layout the
    #: scores were first summed in, and numpy's summation order (so the last bit
    #: of a score, which decides ties) depends on that layout.
    gather: np.ndarray
    #: (K * P, L) the same indices by fit, to read a fit's characters.
    cells: np.ndarray


_ALPHABET_SIZE = len(_ALPHABET)


class _Compiled:
    """A format's patterns as integer arrays per length, for vectorised scoring."""

    def __init__(self, fmt: PlateFormat) -> None:
        classes: dict[frozenset[str], int] = {}
        by_len: dict[int, list[PlatePattern]] = {}
        for p in fmt.patterns:
            by_len.setdefault(len(p), []).append(p)
            for s in p.slots:
                classes.setdefault(s, len(classes))
        self.n_classes = len(classes)
        #: (class, character) membership, as 0/1 so a product masks probabilities.
        self.member = np.array([[c in cls for c in _ALPHABET] for cls in classes], dtype=np.float64)
        self.lookalikes = _lookalike_table(fmt.scoring.lookalikes, fmt.scoring.same_glyph)
        #: Per character, the score and confidence factors a lone read of it gives
        #: each character (1 for itself).
        self.single_score = np.eye(_ALPHABET_SIZE)
        self.single_conf = np.eye(_ALPHABET_SIZE)
        for a, alts in self.lookalikes.items():
            for b, (factor, conf) in alts.items():
                self.single_score[_INDEX[a], _INDEX[b]] = factor
                self.single_conf[_INDEX[a], _INDEX[b]] = conf
        self.by_len = {
            n: (
                tuple(ps),
                np.array([[classes[s] for s in p.slots] for p in ps], dtype=np.intp),
                np.log(np.array([p.weight for p in ps])),
            )
            for n, ps in by_len.items()
        }
        self._groups: dict[tuple[int, int, int], tuple[_Group, ...]] = {}

    def is_lookalike_twin(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` differ only in characters that are look-alikes."""
        return len(a) == len(b) and all(
            x == y or y in self.lookalikes.get(x, {}) for x, y in zip(a, b, strict=True)
        )

    def groups(self, n: int, scoring: Scoring) -> tuple[_Group, ...]:
        """The groups a read of ``n`` positions is matched against, in pattern-length
        order; built once per read length (a handful of lengths ever occur)."""
        key = (n, scoring.max_drop_edge, scoring.max_drop_inner)
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = tuple(self._build_groups(*key))
        return found

    def _build_groups(self, n: int, max_edge: int, max_inner: int) -> Iterable[_Group]:
        for length, (patterns, ids, log_w) in self.by_len.items():
            if length > n:
                continue
            windows = _windows(n, length, max_edge, max_inner)
            if windows is None:
                continue
            keep, edge, inner = windows
            cells = keep[:, None, :] * self.n_classes + ids[None, :, :]  # (K, P, L)
            yield _Group(
                patterns,
                log_w,
                keep,
                edge,
                inner,
                np.ascontiguousarray(cells.transpose(1, 2, 0)),
                cells.reshape(-1, length),
            )


# One entry per format object, found by identity: hashing a frozen PlateFormat
# hashes every pattern (tens of microseconds per call for the EU profile).
_COMPILED_BY_ID: dict[int, tuple[PlateFormat, _Compiled]] = {}


def _compiled(fmt: PlateFormat) -> _Compiled:
    entry = _COMPILED_BY_ID.get(id(fmt))
    if entry is not None and entry[0] is fmt:
        return entry[1]
    if len(_COMPILED_BY_ID) >= 32:
        _COMPILED_BY_ID.clear()
    compiled = _compiled_by_value(fmt)
    # The entry keeps fmt alive, so its id cannot be reused while it is here.
    _COMPILED_BY_ID[id(fmt)] = (fmt, compiled)
    return compiled


@lru_cache(maxsize=32)
def _compiled_by_value(fmt: PlateFormat) -> _Compiled:
    return _Compiled(fmt)


@lru_cache(maxsize=256)
def _windows(
    n: int, length: int, max_edge: int, max_inner: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every way to keep ``length`` of ``n`` read positions in order.

    Returns the kept positions (K, length) and which positions each way drops at
    the ends and in the middle, as (K, n) 0/1 masks; None if there is no way.
    """
    keeps, edges, inners = [], [], []
    drops = n - length
    for inner in range(0, min(max_inner, drops) + 1):
        edge = drops - inner
        if edge > max_edge or (inner and length < 2):
            continue
        for left in range(edge + 1):
            right = n - (edge - left)
            for gone in itertools.combinations(range(left + 1, right - 1), inner):
                keeps.append([i for i in range(left, right) if i not in gone])
                e = np.zeros(n)
                e[:left] = 1
                e[right:] = 1
                g = np.zeros(n)
                g[list(gone)] = 1
                edges.append(e)
                inners.append(g)
    if not keeps:
        return None
    return np.array(keeps, dtype=np.intp), np.array(edges), np.array(inners)


def _class_table(read: _Read, compiled: _Compiled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per read position and class: log score, chosen character index, its confidence."""
    masked = read.score[:, None, :] * compiled.member[None, :, :]  # (n, classes, chars)
    chosen = masked.argmax(axis=2)
    rows = np.arange(len(masked))[:, None]
    best = masked[rows, np.arange(masked.shape[1])[None, :], chosen]
    chosen_conf = read.conf[rows, chosen]
    with np.errstate(divide="ignore"):
        return np.log(best), chosen, chosen_conf


@dataclass(frozen=True, slots=True)
class _Scored:
    """One read's best few fits per pattern length, as arrays (nothing per fit yet)."""

    chosen: np.ndarray  # (n * classes,) chosen character per table cell
    conf: np.ndarray  # (n * classes,) its confidence
    groups: tuple[_Group, ...]
    #: Per group that has any: (group index, selected fits (K * P flat indices), scores).
    picks: list[tuple[int, np.ndarray, np.ndarray]]


def _score_read(read: _Read, compiled: _Compiled, scoring: Scoring, top: int = 4) -> _Scored:
    """The best ``top`` fits of ``read`` for each pattern length.

    The arithmetic is the reference formula's, operation for operation and in the
    same array layouts, so scores agree to the last bit: ties between patterns are
    common (a narrower class that also holds the read character scores the same),
    and which fit wins a tie depends on exact equality and on np.argpartition.
    """
    groups = compiled.groups(len(read.probs), scoring)
    table, chosen, conf = _class_table(read, compiled)
    table = table.ravel()
    # Scoring.drop over all positions at once; where() mirrors min/max on NaN.
    probs = np.array(read.probs, dtype=np.float64)
    probs = np.where(probs > 0.0, probs, 0.0)
    probs = np.where(probs < 1.0, probs, 1.0)
    kept = 1.0 - (1.0 - scoring.drop_sure) * probs
    log_edge = np.log(scoring.drop_edge * kept)
    log_inner = np.log(scoring.drop_inner * kept)
    picks: list[tuple[int, np.ndarray, np.ndarray]] = []
    for gi, group in enumerate(groups):
        base = read.prior + group.edge @ log_edge + group.inner @ log_inner  # (K,)
        summed = table[group.gather].transpose(2, 0, 1).sum(axis=2)  # (K, P)
        flat = (summed + base[:, None] + group.log_w[None, :]).ravel()
        k = min(top, flat.size)
        sel = np.argpartition(-flat, k - 1)[:k]
        scores = flat[sel]
        finite = np.isfinite(scores)
        if not finite.all():
            sel, scores = sel[finite], scores[finite]
        if len(sel):
            picks.append((gi, sel, scores))
    return _Scored(chosen.ravel(), conf.ravel(), groups, picks)


def apply_format(
    result: OcrResult, fmt: PlateFormat | str | Path, min_confidence: float = 0.0
) -> PlateText | None:
    """The best plate reading in ``result`` that fits ``fmt``, or None.

    ``fmt`` is a :class:`PlateFormat` or anything :func:`load_format` takes.
    ``char_confidences`` are the recogniser's probabilities of the chosen characters,
    times the look-alike factor where a position was resolved to a look-alike
    (except for same-glyph pairs such as 0/O, see :class:`Scoring`); a reading taken
    from a whole-string candidate gives each character that string's probability
    spread evenly (its n-th root). ``confidence`` is the lowest of them: a plate is
    as trustworthy as its weakest character. Readings below ``min_confidence`` are
    dropped. ``candidates`` are the distinct plate readings considered, best first,
    with their overall scores (including drop and pattern-weight penalties).
    """
    if not isinstance(fmt, PlateFormat):
        fmt = load_format(fmt)
    compiled = _compiled(fmt)
    # Every picked fit as (read, group, flat index), in the order reads, lengths
    # and argpartition produced them: the stable sort below breaks score ties by it.
    owners: list[tuple[_Scored, _Group, int]] = []
    all_scores: list[np.ndarray] = []
    for read in _reads(result, compiled):
        scored = _score_read(read, compiled, fmt.scoring)
        for gi, sel, scores in scored.picks:
            group = scored.groups[gi]
            owners.extend((scored, group, i) for i in sel.tolist())
            all_scores.append(scores)
    if not owners:
        return None
    scores = np.concatenate(all_scores)
    # Descending and stable, as list.sort(reverse=True) on the scores would be.
    order = np.argsort(-scores, kind="stable").tolist()
    score_list = scores.tolist()
    ranked: dict[str, tuple[float, _Scored, _Group, int]] = {}
    for j in order:
        scored, group, i = owners[j]
        text = _CODES[scored.chosen[group.cells[i]]].tobytes().decode("ascii")
        if text not in ranked:
            ranked[text] = (score_list[j], scored, group, i)
            if len(ranked) >= 5:
                break
    # The best-scored fit whose confidence is high enough. A fit that rewrites a sure
    # character into a look-alike to match a likelier shape (a vanity 8FV480 as the
    # serial BFV480) pays for the rewrite in its confidence; when that leaves it too
    # unsure to report, the reading as read, if it fits a shape surely, is the plate.
    # Only such a look-alike twin of the best fit may stand in for it: any other
    # reading scored lower for a reason (dropped characters, a worse fit).
    best = next(iter(ranked))
    for text, (_, scored, group, i) in ranked.items():
        if text != best and not compiled.is_lookalike_twin(text, best):
            continue
        char_probs = tuple(scored.conf[group.cells[i]].tolist())
        confidence = min(char_probs) if char_probs else 0.0
        if confidence >= min_confidence:
            break
    else:
        return None
    return PlateText(
        text=text,
        confidence=confidence,
        char_confidences=char_probs,
        pattern=group.patterns[i % len(group.patterns)].source,
        candidates=tuple(TextCandidate(t, math.exp(s)) for t, (s, *_) in ranked.items()),
    )
