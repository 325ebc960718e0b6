"""The watchlist in memory: entries, matches, and the immutable :class:`Watchlist`
index, which answers :meth:`Watchlist.match` (the best entry for a read) and
:meth:`Watchlist.explain` (every entry, with why). Entries come from a CSV file
(:mod:`edge.watchlist.csvfile`) or a pushed document (:mod:`edge.watchlist.document`).

Distance is Levenshtein with look-alike substitutions at half cost
(:func:`edge.platetext.distance`).

Index (sized for a million entries and a match in about a millisecond):

* plain entries sit in one dict, normalised plate -> entry (or a tuple of entries);
* a fuzzy query does not scan the list: it generates the read's edit neighbourhood
  (:func:`edge.platetext.neighbourhood`: at most ONE plain edit plus any number of
  look-alike substitutions, within ``max_distance``) and looks each string up in that
  dict;
* wildcard entries (``?`` one character, ``*`` any run) are few; each is filed under
  its longest fixed run of characters, and a query looks up each of its substrings,
  so only entries sharing that run are tried against their compiled pattern.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from edge.platetext import (
    distance,
    neighbourhood,
    normalize,
)

DEFAULT_PRIORITY = 5

_KIND_RANK = {"exact": 0, "wildcard": 1, "fuzzy": 2}

Kind = Literal["exact", "fuzzy", "wildcard"]
_T = TypeVar("_T")


class WatchlistError(Exception):
    """A watchlist file is unusable; one problem per line, each naming file and line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _without_gc(func: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``func`` with the cycle collector paused: building a million small objects
    otherwise triggers repeated full collections that double the load time, and the
    entries hold no reference cycles for it to find."""

    def wrapper(*args: Any, **kwargs: Any) -> _T:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    wrapper.__doc__ = func.__doc__
    wrapper.__name__ = func.__name__
    return wrapper


@dataclass(frozen=True, slots=True)
class WatchlistEntry:
    """One row of the list. ``plate`` is normalised; it may hold ``?`` and ``*``.

    ``valid_from``/``valid_until`` are aware UTC datetimes (None: unbounded), both
    inclusive; a date-only ``valid_until`` was stored as the last instant of that day.
    ``line`` is where the entry starts in its file (0 when not from a file).
    """

    plate: str
    list: str = ""
    priority: int = DEFAULT_PRIORITY
    reason: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    covert: bool = False
    entry_id: str = ""
    line: int = 0

    @property
    def is_wildcard(self) -> bool:
        return "?" in self.plate or "*" in self.plate

    def valid_at(self, at: datetime) -> bool:
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_until is None or at <= self.valid_until


@dataclass(frozen=True, slots=True)
class WatchlistMatch:
    """Why ``entry`` matched: ``text`` (the read, or one of its candidates when
    ``via_candidate``) is ``distance`` edits from the entry's plate. ``scope`` is the
    list the entry is in (its :attr:`Watchlist.scope`): a vehicle matches against
    several lists at once, and HQ needs to know which one named the plate."""

    entry: WatchlistEntry
    kind: Kind
    distance: float
    text: str
    via_candidate: bool = False
    scope: str = ""

    def sort_key(self) -> tuple:
        return (
            self.entry.priority,
            self.distance,
            _KIND_RANK[self.kind],
            self.via_candidate,
            _id_key(self.entry.entry_id),
        )

    def describe(self) -> str:
        how = {
            "exact": "exact match",
            "wildcard": f"matches pattern {self.entry.plate}",
            "fuzzy": f"within distance {self.distance:g} of {self.entry.plate}",
        }[self.kind]
        via = f" (via OCR candidate {self.text})" if self.via_candidate else ""
        return how + via


def _id_key(entry_id: str) -> tuple[int, int, str]:
    # Line-number ids sort numerically, so "9" comes before "10".
    return (0, int(entry_id), "") if entry_id.isdigit() else (1, 0, entry_id)


# --------------------------------------------------------------------------- the list


def _wildcard_regex(plate: str) -> re.Pattern[str]:
    return re.compile("".join("." if c == "?" else ".*" if c == "*" else c for c in plate))


def _longest_run(plate: str) -> str:
    return max(re.split(r"[?*]", plate), key=len)


class Watchlist:
    """An immutable, indexed watchlist. Build with
    :func:`~edge.watchlist.csvfile.load_watchlist` or directly from entries; ``version``
    and ``source`` say which list this is, and ``scope`` which of a vehicle's lists it
    is ("file", "fleet" or "vehicle"; "" when not one of them)."""

    __slots__ = (
        "_always",
        "_count",
        "_exact",
        "_frozen",
        "_runs",
        "loaded_at",
        "scope",
        "source",
        "version",
    )

    @_without_gc
    def __init__(
        self,
        entries: Iterable[WatchlistEntry],
        *,
        version: int = 0,
        source: str = "",
        scope: str = "",
        loaded_at: datetime | None = None,
    ) -> None:
        exact: dict[str, WatchlistEntry | tuple[WatchlistEntry, ...]] = {}
        runs: dict[str, list[tuple[re.Pattern[str], WatchlistEntry]]] = {}
        always: list[tuple[re.Pattern[str], WatchlistEntry]] = []
        count = 0
        for e in entries:
            count += 1
            if e.is_wildcard:
                item = (_wildcard_regex(e.plate), e)
                run = _longest_run(e.plate)
                (runs.setdefault(run, []) if run else always).append(item)
                continue
            # Most plates are listed once: storing the bare entry saves a container each.
            prev = exact.get(e.plate)
            if prev is None:
                exact[e.plate] = e
            elif isinstance(prev, tuple):
                exact[e.plate] = (*prev, e)
            else:
                exact[e.plate] = (prev, e)
        self._exact = exact
        self._runs = {k: tuple(v) for k, v in runs.items()}
        self._always = tuple(always)
        self._count = count
        self.version = version
        self.source = source
        self.scope = scope
        self.loaded_at = loaded_at or datetime.now(UTC)
        self._frozen = True
        # A list lives until replaced and holds no cycles: moving it out of the
        # collector's reach keeps a full collection (100+ ms at a million entries)
        # from landing in the middle of a match.
        gc.freeze()

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("a Watchlist is immutable; load a new one instead")
        object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return self._count

    def entries(self) -> Iterator[WatchlistEntry]:
        for v in self._exact.values():
            yield from (v,) if isinstance(v, WatchlistEntry) else v
        for items in (*self._runs.values(), self._always):
            for _, e in items:
                yield e

    def _lookup(self, plate: str) -> tuple[WatchlistEntry, ...]:
        v = self._exact.get(plate)
        if v is None:
            return ()
        return (v,) if isinstance(v, WatchlistEntry) else v

    def _wildcards(self, text: str) -> Iterator[WatchlistEntry]:
        seen: set[int] = set()
        n = len(text)
        for i in range(n):
            for j in range(i + 1, n + 1):
                for regex, e in self._runs.get(text[i:j], ()):
                    if id(e) not in seen and regex.fullmatch(text):
                        seen.add(id(e))
                        yield e
        for regex, e in self._always:
            if regex.fullmatch(text):
                yield e

    def explain(
        self,
        text: str,
        at: datetime,
        *,
        candidates: Sequence[str] = (),
        max_distance: float = 1,
    ) -> list[WatchlistMatch]:
        """Every entry valid at ``at`` that matches ``text`` or one of ``candidates``,
        best first (priority, then distance, exact before wildcard before fuzzy, then
        the read itself before a candidate, then entry id); one match per entry."""
        at = _utc(at)
        scope = self.scope
        best: dict[int, WatchlistMatch] = {}

        def offer(m: WatchlistMatch) -> None:
            if not m.entry.valid_at(at):
                return
            old = best.get(id(m.entry))
            if old is None or m.sort_key() < old.sort_key():
                best[id(m.entry)] = m

        reads = [normalize(text)]
        for c in candidates:
            c = normalize(c)
            if c and c not in reads:
                reads.append(c)
        for k, read in enumerate(reads):
            if not read:
                continue
            via = k > 0
            for e in self._lookup(read):
                offer(WatchlistMatch(e, "exact", 0.0, read, via, scope))
            for e in self._wildcards(read):
                offer(WatchlistMatch(e, "wildcard", 0.0, read, via, scope))
            if max_distance > 0:
                # Set intersection runs in C: most of the few hundred strings miss.
                near = self._exact.keys() & neighbourhood(read, max_distance)
                near.discard(read)
                for variant in near:
                    for e in self._lookup(variant):
                        # The generated cost is an upper bound: report the true one.
                        d = distance(read, variant)
                        offer(WatchlistMatch(e, "fuzzy", d, read, via, scope))
        return sorted(best.values(), key=WatchlistMatch.sort_key)

    def match(
        self,
        text: str,
        *,
        at: datetime,
        candidates: Sequence[str] = (),
        max_distance: float = 1,
    ) -> WatchlistMatch | None:
        """The best match for a read (see :meth:`explain` for the order), or None."""
        found = self.explain(text, at, candidates=candidates, max_distance=max_distance)
        return found[0] if found else None


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
