"""Plate text: the characters a plate may hold, normalising what was read, and the
look-alike distance between two plate strings (the tracker tells a new plate from a
re-read of the same one with it; the watchlist matches reads with it).

Distance is Levenshtein with substitution, insertion and deletion costing 1, except
that substituting one character for a look-alike (0/O/D/Q, 1/I/L, 2/Z, 5/S, 6/G, 8/B)
costs 0.5, since that is the recogniser's usual mistake.

A read's neighbourhood (what a fuzzy watchlist query looks up instead of scanning the
list) is every string reachable with at most ONE plain edit (substitution, insertion or
deletion) plus any number of look-alike substitutions, within ``max_distance``. For
``max_distance`` 1 that is exactly the set of strings within distance 1 (two edits
within 1 must both be look-alike substitutions); for 2 and 3 two plain edits are not
searched: lists are large, and a read two real errors away matches too many innocent
plates anyway.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOOKALIKE_GROUPS: tuple[str, ...] = ("0ODQ", "1IL", "2Z", "5S", "6G", "8B")
LOOKALIKE_COST = 0.5

_GROUP_OF = {c: i for i, group in enumerate(LOOKALIKE_GROUPS) for c in group}
_LOOKALIKES = {c: tuple(o for o in group if o != c) for group in LOOKALIKE_GROUPS for c in group}

LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = frozenset("0123456789")
ALNUM = LETTERS | DIGITS


# ------------------------------------------------------------------------ normalising


def normalize(text: str) -> str:
    """Upper-case A-Z0-9 only: how plates are stored and compared."""
    return "".join(c for c in text.upper() if c in ALNUM)


def normalize_plate(text: str) -> str:
    """Upper-case A-Z0-9 only, keeping the wildcards ``?`` and ``*``."""
    out = "".join(c for c in text.upper() if c in ALPHABET or c in "?*")
    # Adjacent stars mean the same as one; collapsing them keeps the regexes simple.
    return re.sub(r"\*+", "*", out)


# --------------------------------------------------------------------------- distance


def sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    group = _GROUP_OF.get(a)
    return LOOKALIKE_COST if group is not None and group == _GROUP_OF.get(b) else 1.0


def distance(a: str, b: str) -> float:
    """Levenshtein distance with look-alike substitutions at half cost."""
    # Dense lists give a read dozens of neighbours, so skip the full table when a
    # cheaper exact answer exists: equal lengths cannot do better with indels
    # (one insertion plus one deletion already costs 2) ...
    if len(a) == len(b):
        cost = sum(sub_cost(x, y) for x, y in zip(a, b, strict=True) if x != y)
        if cost <= 2:
            return cost
    # ... and one length apart, a single deletion is the least possible.
    elif abs(len(a) - len(b)) == 1:
        long, short = (a, b) if len(a) > len(b) else (b, a)
        i = next(
            (k for k, (x, y) in enumerate(zip(long, short, strict=False)) if x != y), len(short)
        )
        if long[i + 1 :] == short[i:]:
            return 1.0
    prev = [float(j) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        cur = [float(i)]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + sub_cost(ca, cb)))
        prev = cur
    return prev[-1]


def _lookalike_variants(text: str, budget: float) -> Iterator[tuple[str, float]]:
    """``text`` with look-alike substitutions costing at most ``budget`` (itself first)."""
    yield text, 0.0
    slots = [i for i, c in enumerate(text) if c in _LOOKALIKES]
    most = min(len(slots), int(budget / LOOKALIKE_COST + 1e-9))
    for k in range(1, most + 1):
        for positions in itertools.combinations(slots, k):
            for chars in itertools.product(*(_LOOKALIKES[text[p]] for p in positions)):
                s = list(text)
                for p, c in zip(positions, chars, strict=True):
                    s[p] = c
                yield "".join(s), k * LOOKALIKE_COST


def _plain_edits(text: str) -> list[str]:
    """Every string one plain substitution, insertion or deletion from ``text``
    (and ``text`` itself, via substituting a character by itself)."""
    cuts = [(text[:i], text[i:]) for i in range(len(text) + 1)]
    out = [h + t[1:] for h, t in cuts if t]
    out += [h + c + t[1:] for h, t in cuts if t for c in ALPHABET]
    out += [h + c + t for h, t in cuts for c in ALPHABET]
    return out


def neighbourhood(text: str, max_distance: float) -> set[str]:
    """Strings reachable from ``text`` under the rule in the module docstring
    (``text`` included); :func:`distance` gives each one's true distance."""
    out = {v for v, _ in _lookalike_variants(text, max_distance)}
    if max_distance >= 1:
        # Look-alike substitutions and one plain edit commute (a look-alike swap of the
        # edited character itself is just another plain edit), so swapping first and
        # editing each variant reaches the same strings with far fewer variants.
        for variant, _ in _lookalike_variants(text, max_distance - 1):
            out.update(_plain_edits(variant))
    return out
