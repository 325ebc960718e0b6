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

from edge.hq.command import DEFAULT_DB, open_store
from edge.hq.console import escape_control, json_line
from edge.hq.query import audited_search, search_query

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


def _flags(result: dict) -> str:
    flags = [name for name in ("conflict", "withdrawn") if result[name]]
    return ",".join(flags) or "-"


def cmd_hq_search(args: argparse.Namespace) -> int:
    query = search_query(args)
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        results = audited_search(store, query, args.user)
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
