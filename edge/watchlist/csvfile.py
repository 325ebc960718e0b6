"""Watchlist CSV files: a list is loaded all-or-nothing from a CSV with a header (see
:func:`parse_csv`) into a :class:`edge.watchlist.lists.Watchlist`. The rules every
entry must pass (:func:`entry_checker`) are here too, and pushed documents
(:mod:`edge.watchlist.document`) apply the same ones.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Protocol

from edge import crossboundary
from edge.platetext import (
    ALPHABET,
    normalize_plate,
)
from edge.textrules import IDENTIFIER, IDENTIFIER_RULE, MAX_TEXT_LENGTH, unshowable_in
from edge.watchlist.lists import (
    DEFAULT_PRIORITY,
    Watchlist,
    WatchlistEntry,
    WatchlistError,
    _utc,
    _without_gc,
)

COLUMNS = ("plate", "list", "priority", "reason", "valid_from", "valid_until", "covert", "entry_id")

MAX_PLATE_LENGTH = 16
#: The longest field a CSV list may hold (characters). Reasons are a line or two; a
#: longer field is a quote left open or a file that is not a watchlist.
MAX_FIELD_LENGTH = 1000
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})

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
    rows here, pushed JSON documents in :mod:`edge.watchlist.document`) so that both accept
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
