"""`lpr-edge hq search`: investigators' query of the hits HQ stored, on either store.

The plate is looked up exactly and fuzzily by the watchlist's rules (look-alike
characters such as 8/B or 0/O at half cost, see :mod:`edge.platetext`), through the
indexed plate column (:meth:`edge.hq.store.StoreReads.search`). Every search, one
with no result included, is recorded in HQ's own audit table (``hq_audit``: who,
when, what was asked and how many results it gave), as the privacy rules ask.
"""

from __future__ import annotations

import argparse
import sys

from edge.errors import UsageError
from edge.hq.command import DEFAULT_DB, open_store
from edge.hq.console import escape_control, json_line
from edge.hq.store import SEARCH_LIMIT
from edge.platetext import normalize
from edge.textrules import IDENTIFIER, IDENTIFIER_RULE
from edge.timefmt import iso_utc, parse_utc

#: Columns of the console table: (heading, result key).
COLUMNS = (
    ("distance", "distance"),
    ("plate", "plate"),
    ("observed_at", "observed_at"),
    ("vehicle", "vehicle_id"),
    ("camera", "camera"),
    ("list", "list"),
    ("entry", "entry_id"),
    ("priority", "priority"),
    ("flags", "flags"),
    ("event_id", "event_id"),
)


def _moment(option: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return iso_utc(parse_utc(text))
    except ValueError:
        raise UsageError(
            f"{option} {escape_control(text)}: expected an ISO-8601 UTC date or time, "
            "e.g. 2026-11-23T08:00:00Z"
        ) from None


def user_option(args: argparse.Namespace) -> str:
    """The ``--user`` of an audited HQ command (search, purge, hold), checked: it is
    written to HQ's audit as who did it."""
    user = args.user or ""
    if not IDENTIFIER.fullmatch(user):
        raise UsageError(f"--user {escape_control(user)!r}: expected {IDENTIFIER_RULE}")
    return user


def search_query(args: argparse.Namespace) -> dict:
    """The search's parameters, checked: UsageError naming the option otherwise."""
    user_option(args)
    plate = normalize(args.plate or "")
    if not plate:
        raise UsageError(f"--plate {escape_control(args.plate or '')!r}: no letters or digits")
    limit = SEARCH_LIMIT if args.limit is None else args.limit
    if limit < 1:
        raise UsageError(f"--limit {limit}: expected a positive number")
    since, until = _moment("--since", args.since), _moment("--until", args.until)
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    query = {"plate": plate, "since": since, "until": until}
    query.update(vehicle_id=args.vehicle, list=args.list, limit=limit)
    return query


def _flags(result: dict) -> str:
    flags = [name for name in ("conflict", "withdrawn") if result[name]]
    return ",".join(flags) or "-"


def cmd_hq_search(args: argparse.Namespace) -> int:
    query = search_query(args)
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        results = store.search(
            query["plate"],
            since=query["since"],
            until=query["until"],
            vehicle_id=query["vehicle_id"],
            list_name=query["list"],
            limit=query["limit"],
        )
        store.add_hq_audit(args.user, "search", query, len(results))
    finally:
        store.close()
    out = sys.stdout
    if args.json:
        for result in results:
            out.write(json_line(result) + "\n")
    else:
        rows = [
            [escape_control(str(_flags(r) if key == "flags" else r[key])) for _, key in COLUMNS]
            for r in results
        ]
        widths = [
            max([len(head), *(len(row[i]) for row in rows)]) for i, (head, _) in enumerate(COLUMNS)
        ]
        for row in [[head for head, _ in COLUMNS], *rows]:
            out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")
        out.write(f"{len(results)} result(s) for {query['plate']} (search audited)\n")
    out.flush()
    return 0
