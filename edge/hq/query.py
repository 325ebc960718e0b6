"""The investigators' search as both ``lpr-edge hq search`` and HQ's console run it:
its parameters checked (:func:`search_query`), and the search with its ``hq_audit``
row (:func:`audited_search`). Apart from :mod:`edge.hq.search` so that the console
can use it without the command's module (which starts the console)."""

from __future__ import annotations

import argparse

from edge.errors import UsageError
from edge.hq.console import escape_control
from edge.hq.store import SEARCH_LIMIT
from edge.platetext import normalize
from edge.textrules import IDENTIFIER, IDENTIFIER_RULE
from edge.timefmt import iso_utc, parse_utc


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


def audited_search(store, query: dict, user: str) -> list[dict]:
    """Run a :func:`search_query` on ``store`` and record it in ``hq_audit`` as
    ``user``'s; the results. (The command and HQ's console both search through here.)"""
    results = store.search(
        query["plate"],
        since=query["since"],
        until=query["until"],
        vehicle_id=query["vehicle_id"],
        list_name=query["list"],
        limit=query["limit"],
    )
    store.add_hq_audit(user, "search", query, len(results))
    return results
