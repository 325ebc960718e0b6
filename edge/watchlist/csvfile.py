"""The watchlist: loading a CSV of wanted plates and matching reads against it.

A list is loaded all-or-nothing from a CSV with a header (see :func:`parse_csv`) into
an immutable :class:`Watchlist`, which answers :meth:`Watchlist.match` (the best entry
for a read) and :meth:`Watchlist.explain` (every entry, with why).

Distance is Levenshtein with substitution, insertion and deletion costing 1, except
that substituting one character for a look-alike (0/O/D/Q, 1/I/L, 2/Z, 5/S, 6/G, 8/B)
costs 0.5, since that is the recogniser's usual mistake.

Index (sized for a million entries and a match in about a millisecond):

* plain entries sit in one dict, normalised plate -> entry (or a tuple of entries);
* a fuzzy query does not scan the list: it generates the read's edit neighbourhood and
  looks each string up in that dict. The neighbourhood is every string reachable with
  at most ONE plain edit (substitution, insertion or deletion) plus any number of
  look-alike substitutions, within ``max_distance``. For ``max_distance`` 1 that is
  exactly the set of strings within distance 1 (two edits within 1 must both be
  look-alike substitutions); for 2 and 3 two plain edits are not searched: lists are
  large, and a read two real errors away matches too many innocent plates anyway;
* wildcard entries (``?`` one character, ``*`` any run) are few; each is filed under
  its longest fixed run of characters, and a query looks up each of its substrings,
  so only entries sharing that run are tried against their compiled pattern.
"""

from __future__ import annotations

import csv
import gc
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from edge import crossboundary
from edge.platetext import (
    ALPHABET,
    distance,
    neighbourhood,
    normalize,
    normalize_plate,
)
from edge.textrules import IDENTIFIER, IDENTIFIER_RULE, MAX_TEXT_LENGTH, unshowable_in

COLUMNS = ("plate", "list", "priority", "reason", "valid_from", "valid_until", "covert", "entry_id")
DEFAULT_PRIORITY = 5
MAX_PLATE_LENGTH = 16
#: The longest field a CSV list may hold (characters). Reasons are a line or two; a
#: longer field is a quote left open or a file that is not a watchlist.
MAX_FIELD_LENGTH = 1000
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
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
    """An immutable, indexed watchlist. Build with :func:`load_watchlist` or directly
    from entries; ``version`` and ``source`` say which list this is, and ``scope`` which
    of a vehicle's lists it is ("file", "fleet" or "vehicle"; "" when not one of them)."""

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


# --------------------------------------------------------------------------- loading


def _parse_time(value: str, *, end_of_day: bool) -> datetime:
    value = value.strip()
    if "T" not in value and " " not in value and len(value) <= 10:
        d = date.fromisoformat(value)
        if end_of_day:
            return datetime.combine(d, time.max, UTC)
        return datetime.combine(d, time.min, UTC)
    return _utc(datetime.fromisoformat(value))


def parse_csv(text: str, source: str = "<watchlist>") -> list[WatchlistEntry]:
    """Parse a watchlist CSV; raise :class:`WatchlistError` naming every bad line.

    Columns (header required, any order): ``plate`` (required), ``list``,
    ``priority`` (1 highest .. 9, default 5), ``reason``, ``valid_from``,
    ``valid_until`` (ISO date or datetime, naive is UTC, a date-only
    ``valid_until`` lasts through that day), ``covert`` (true/false/1/0/yes/no),
    ``entry_id`` (default: the line number).

    One entry per line: a field may be quoted to hold a comma (a quote in it doubled,
    ``"known as ""Keung"" locally"``) but never a line break, and no field is longer than
    :data:`MAX_FIELD_LENGTH` characters.
    """
    return parse_lines(io.StringIO(text.removeprefix("\ufeff"), newline=""), source)


@_without_gc
def parse_lines(lines: Iterable[str], source: str = "<watchlist>") -> list[WatchlistEntry]:
    """:func:`parse_csv` over lines (an open file), so a large file is never held whole."""
    problems: list[str] = []
    rows = _one_line_rows(lines, source, problems)
    header: list[str] | None = None
    header_line = 0
    for line, row, _ in rows:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower() for cell in row]
            header_line = line
            break
    if problems:  # broken quoting up to the header: what the columns are is unknown
        raise WatchlistError(problems)
    if header is None:
        raise WatchlistError([f"{source}: empty file: expected a header line with 'plate'"])
    unknown = [h for h in header if h not in COLUMNS]
    for h in unknown:
        problems.append(
            f"{source}: line {header_line}: unknown column {h!r} (known: {', '.join(COLUMNS)})"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    for h in dupes:
        problems.append(f"{source}: line {header_line}: column {h!r} appears twice")
    if "plate" not in header:
        problems.append(f"{source}: line {header_line}: no 'plate' column in the header")
    if problems:
        raise WatchlistError(problems)
    col = {h: i for i, h in enumerate(header)}
    width = len(header)
    i_plate = col["plate"]
    # Missing optional columns read as "" from a pad cell at the end of each row.
    i_list, i_prio, i_reason, i_from, i_until, i_covert, i_id = (
        col.get(name, width)
        for name in (
            "list",
            "priority",
            "reason",
            "valid_from",
            "valid_until",
            "covert",
            "entry_id",
        )
    )
    pad = [""]
    entries: list[WatchlistEntry] = []
    check = entry_checker()
    for start, row, long_line in rows:
        if long_line:
            too_long = _too_long_fields(header, row)
            if too_long:
                problems.append(f"{source}: line {start}: {'; '.join(too_long)}")
                continue
        if len(row) == width:
            row += pad
        elif len(row) < width:
            row += [""] * (width + 1 - len(row))
        elif not any(c.strip() for c in row):
            continue
        else:
            problems.append(f"{source}: line {start}: {len(row)} fields, the header has {width}")
            continue
        if not row[i_plate].strip() and not any(c.strip() for c in row):
            continue  # a blank line
        entry = check(
            row[i_plate],
            row[i_list],
            row[i_prio],
            row[i_reason],
            row[i_from],
            row[i_until],
            row[i_covert],
            row[i_id].strip() or str(start),
            start,
            start,
        )
        if type(entry) is list:
            problems.append(f"{source}: line {start}: {'; '.join(entry)}")
        elif not problems:  # all-or-nothing: after a problem only collect the others
            entries.append(entry)
    if problems:
        raise WatchlistError(problems)
    return entries


class _RecordRunsOn(Exception):
    """The csv reader asked for a second line to finish one record."""


def _one_line_rows(
    lines: Iterable[str], source: str, problems: list[str]
) -> Iterator[tuple[int, list[str], bool]]:
    """``(line number, fields, long)`` for each line of CSV text, where ``long`` says
    the line is longer than :data:`MAX_FIELD_LENGTH`, so it may hold a field that is.

    A watchlist holds one entry per line. A quoted field may hold commas and doubled
    quotes, but a quote left open must not let the csv module read on into the next
    lines: one stray ``"`` would swallow every later entry into one reason and load a
    short list without a word. So the reader is handed one line per record; a record
    that asks for more (an unclosed quote, even on the last line) or is otherwise
    badly quoted is added to ``problems`` naming the line its quoted field starts on,
    and reading goes on from the next line so that every other problem is named too.
    """
    remaining = iter(lines)
    given = 0  # lines handed to the csv reader so far
    record_start = 0  # ``given`` when the reader began its current record
    length = 0  # of the line given last

    # A generator over closure cells, not a class: it runs once per line of
    # million-entry lists.
    def one_record_at_a_time() -> Iterator[str]:
        nonlocal given, length
        while given == record_start:  # the reader wants the first line of a record
            text = next(remaining, None)
            if text is None:
                return
            given += 1
            length = len(text)
            yield text
        raise _RecordRunsOn

    while True:
        # strict: text after a closing quote ("a"b) is an error, not silently joined.
        reader = csv.reader(one_record_at_a_time(), strict=True)
        try:
            for row in reader:
                record_start = given
                yield given, row, length > MAX_FIELD_LENGTH
            return
        except _RecordRunsOn:
            problems.append(
                f"{source}: line {given}: a quoted field is not closed on its line "
                f'(a stray " ?); a watchlist has one entry per line, a field in quotes '
                f"may hold commas but no line break"
            )
        except csv.Error as exc:
            if length > csv.field_size_limit():  # the csv module's own, far larger, limit
                why = f"a field is more than the {MAX_FIELD_LENGTH} characters allowed"
            else:
                why = (
                    f"badly quoted field ({exc}); a field in quotes must end with a quote "
                    f"followed by a comma or the end of the line"
                )
            problems.append(f"{source}: line {given}: {why}")
        # The broken line is done with: a fresh reader starts on the next one.
        record_start = given


def _too_long_fields(header: list[str], row: list[str]) -> list[str]:
    """A problem for each named field of ``row`` longer than :data:`MAX_FIELD_LENGTH`."""
    return [
        f"{name} is {len(cell)} characters long, "
        f"more than the {MAX_FIELD_LENGTH} allowed in a field"
        for name, cell in zip(header, row, strict=False)
        if len(cell) > MAX_FIELD_LENGTH
    ]


class EntryCheck(Protocol):
    """Validates one entry given as the text of its fields; see :func:`entry_checker`."""

    def __call__(
        self,
        plate: str,
        name: str,
        priority: str,
        reason: str,
        valid_from: str,
        valid_until: str,
        covert: str,
        entry_id: str,
        pos: int,
        line: int,
    ) -> WatchlistEntry | list[str]: ...


def entry_checker(where: Callable[[int], str] = "line {}".format) -> EntryCheck:
    """The one validation of a list entry, shared by every form a list comes in (CSV
    rows here, pushed JSON documents in :mod:`edge.watchlist_push`) so that both accept
    the same values and word their problems the same way.

    The returned function takes an entry's fields as text, as in a CSV cell (surrounding
    blanks ignored, "" for an absent optional field; ``entry_id`` already defaulted by
    the caller), and gives the :class:`WatchlistEntry` (with ``line``) or the list of
    problems with it, without location. It remembers the entry ids it has seen: a
    repeat is a problem naming where the first one was (``where(pos)``). Repeated list
    names, reasons and dates are shared and parsed once.
    """
    strings: dict[str, str] = {}
    starts: dict[str, datetime | None] = {"": None}
    ends: dict[str, datetime | None] = {"": None}
    ids: dict[str, int] = {}
    new_entry = WatchlistEntry
    plain = _PLAIN_PLATE.fullmatch
    priorities = _PRIORITIES
    bools = _BOOLS

    # A closure rather than a class: it runs once per row of million-entry lists, and
    # cell variables are cheaper to reach than attributes.
    def check(
        plate: str,
        name: str,
        priority: str,
        reason: str,
        valid_from: str,
        valid_until: str,
        covert: str,
        entry_id: str,
        pos: int,
        line: int,
    ) -> WatchlistEntry | list[str]:
        plate = plate.strip()
        if plain(plate):
            bad: list[str] = []
        else:
            plate, bad = _check_plate(plate)
        priority = priority.strip()
        prio = priorities.get(priority)
        if prio is None:
            bad.append(f"priority {priority!r} is not a whole number from 1 to 9")
        raw_from, raw_until = valid_from.strip(), valid_until.strip()
        # Only good dates are remembered, so every entry with a bad one is reported.
        try:
            start = starts[raw_from]
        except KeyError:
            start = _try_time(raw_from, False, "valid_from", bad)
            if start is not None:
                starts[raw_from] = start
        try:
            until = ends[raw_until]
        except KeyError:
            until = _try_time(raw_until, True, "valid_until", bad)
            if until is not None:
                ends[raw_until] = until
        if start and until and start > until:
            bad.append(f"valid_from {raw_from} is after valid_until {raw_until}")
        covert = covert.strip()
        flag = bools.get(covert.lower())
        if flag is None:
            bad.append(f"covert {covert!r} is not true/false/1/0/yes/no")
        first = ids.setdefault(entry_id, pos)
        if first != pos:
            bad.append(f"entry_id {entry_id!r} already used on {where(first)}")
        name, reason = name.strip(), reason.strip()
        # Names and texts go into every hit: HQ's schema refuses what is refused here.
        if name not in strings and name and not IDENTIFIER.fullmatch(name):
            bad.append(f"list {name!r} is not a list name ({IDENTIFIER_RULE})")
        # Printable ASCII (most ids and reasons) is passed at C speed: this runs once
        # per row of million-entry lists. Reasons repeat, and are checked once.
        if not (entry_id.isascii() and entry_id.isprintable()) or len(entry_id) > MAX_TEXT_LENGTH:
            bad += _text_problems("entry_id", entry_id)
        if reason not in strings and (
            not (reason.isascii() and reason.isprintable()) or len(reason) > MAX_TEXT_LENGTH
        ):
            bad += _text_problems("reason", reason)
        # (prio and flag are None only with a problem listed; the test says so to mypy.)
        if bad or prio is None or flag is None:
            return bad
        return new_entry(
            plate,
            strings.setdefault(name, name),
            prio,
            strings.setdefault(reason, reason),
            start,
            until,
            flag,
            entry_id,
            line,
        )

    return check


_PLAIN_PLATE = re.compile(f"[A-Z0-9]{{1,{MAX_PLATE_LENGTH}}}")
_PRIORITIES = {"": DEFAULT_PRIORITY, **{str(p): p for p in range(1, 10)}}
_BOOLS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}


def _text_problems(field_name: str, text: str) -> list[str]:
    """Why ``text`` cannot be a hit's free-text field (HQ's schema refuses the same)."""
    if len(text) > MAX_TEXT_LENGTH:
        return [f"{field_name} is longer than {MAX_TEXT_LENGTH} characters"]
    if (char := unshowable_in(text)) is not None:
        return [f"{field_name} holds the control or invisible character {char}"]
    return []


def _check_plate(raw: str) -> tuple[str, list[str]]:
    """The slow path for plates that are not already plain upper-case marks."""
    plate = normalize_plate(raw)
    if not raw:
        return plate, ["missing plate"]
    # A cross-boundary plate may be listed as issued, 粤Z1234港: it is matched by its
    # core, which is what the recogniser reads as the plate. Its marks anywhere else
    # are a typing error, not a plate.
    if crossboundary.written_as_issued(raw.upper().replace(" ", "")):
        return plate, []
    if any(c not in ALPHABET and c not in "?* -" for c in raw.upper()):
        return plate, [
            f"plate {raw!r} has characters other than letters, digits, ? and * "
            f"(a cross-boundary plate may be written 粤Z1234港)"
        ]
    if not plate.replace("?", "").replace("*", ""):
        return plate, [f"plate {raw!r} has no letter or digit"]
    if len(plate.replace("*", "")) > MAX_PLATE_LENGTH:
        return plate, [f"plate {raw!r} is longer than {MAX_PLATE_LENGTH} characters"]
    return plate, []


def _try_time(raw: str, end_of_day: bool, name: str, bad: list[str]) -> datetime | None:
    try:
        return _parse_time(raw, end_of_day=end_of_day)
    except ValueError:
        bad.append(f"{name} {raw!r} is not an ISO date or date-time")
        return None


def read_csv(path: Path | str) -> list[WatchlistEntry]:
    """Read and parse a watchlist file (see :func:`parse_csv`)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return parse_lines(fh, str(path))
    except FileNotFoundError:
        raise WatchlistError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise WatchlistError([f"{path}: is a directory, expected a CSV file"]) from None
    except PermissionError:
        raise WatchlistError([f"{path}: permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise WatchlistError([f"{path}: not UTF-8 text ({exc.reason})"]) from None


def load_watchlist(path: Path | str, *, version: int = 0) -> Watchlist:
    """Load, validate and index a watchlist CSV; all or nothing."""
    return Watchlist(read_csv(path), version=version, source=str(path))
