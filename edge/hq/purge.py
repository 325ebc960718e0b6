"""``lpr-edge hq purge`` (apply HQ's retention now, :mod:`edge.hq.retention`), and case
holds: ``hq hold`` keeps a hit past its retention for a case, ``hq release`` ends
that, ``hq holds`` lists them. Each is recorded in HQ's own audit (``hq_audit``: who,
when, what) by the store, a hold or release in the same transaction as the change.
"""

from __future__ import annotations

import argparse
import re
import sys

from edge.errors import UsageError
from edge.hq.command import DEFAULT_DB, open_store
from edge.hq.console import escape_control, json_line
from edge.hq.query import user_option
from edge.hq.retention import policy_from_args
from edge.hq.store import PURGED_TABLES, HoldError

#: A case reference: letters, digits and ``. / _ -`` (police references such as
#: ``KC/RN/2026/001234``), at most 64.
CASE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9./_-]{0,63}")
#: Characters of a hold's reason kept.
MAX_REASON = 500


def _case(args: argparse.Namespace) -> str:
    case = args.case or ""
    if not CASE_REF.fullmatch(case):
        raise UsageError(
            f"--case {escape_control(case)!r}: expected 1 to 64 letters, digits, '.', '/', "
            "'_' or '-', starting with a letter or digit"
        )
    return case


def _event_id(args: argparse.Namespace) -> str:
    event_id = (args.event_id or "").strip()
    if not event_id or len(event_id) > 128 or not event_id.isprintable():
        raise UsageError(f"--event-id {escape_control(args.event_id or '')!r}: not an event id")
    return event_id


def cmd_hq_purge(args: argparse.Namespace) -> int:
    """Apply the retention policy now (or, with ``--dry-run``, count what it would
    delete) and print the rows per table; recorded in ``hq_audit``."""
    user = user_option(args)
    policy = policy_from_args(args)
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        counts = store.purge(
            policy.before(), user=user, policy=policy.to_json(), dry_run=args.dry_run
        )
    finally:
        store.close()
    assert counts is not None  # (waited for any other purge)
    out = sys.stdout
    if args.json:
        out.write(json_line({"dry_run": args.dry_run, "policy": policy.to_json(), **counts}) + "\n")
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for table in PURGED_TABLES:
            out.write(f"{table:<15} {verb} {counts[table]}\n")
        kept = ", ".join(f"{name} {period}" for name, period in policy.to_json().items())
        note = "dry run, nothing deleted" if args.dry_run else "purge audited"
        out.write(f"retention: {kept} ({note})\n")
    out.flush()
    return 0


def cmd_hq_hold(args: argparse.Namespace) -> int:
    user, case, event_id = user_option(args), _case(args), _event_id(args)
    reason = " ".join((args.reason or "").split())[:MAX_REASON]
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        rows = store.hold(event_id, case, user=user, reason=reason)
    except HoldError as exc:
        raise UsageError(f"--event-id {escape_control(event_id)}: {exc}") from None
    finally:
        store.close()
    print(f"held {escape_control(event_id)} for case {case} ({rows} hit row(s); hold audited)")
    return 0


def cmd_hq_release(args: argparse.Namespace) -> int:
    user, case, event_id = user_option(args), _case(args), _event_id(args)
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        store.release(event_id, case, user=user)
    except HoldError as exc:
        raise UsageError(f"--event-id {escape_control(event_id)}: {exc}") from None
    finally:
        store.close()
    print(
        f"released {escape_control(event_id)} from case {case} (release audited; the hit "
        "goes at the next purge if past retention and held by no other case)"
    )
    return 0


def cmd_hq_holds(args: argparse.Namespace) -> int:
    store = open_store(str(args.db or DEFAULT_DB))
    try:
        holds = store.holds(released=args.all)
    finally:
        store.close()
    out = sys.stdout
    for hold in holds:
        if args.json:
            out.write(json_line(hold) + "\n")
            continue
        released = (
            hold["released_at"] and f" released {hold['released_at']} by {hold['released_by']}"
        )
        out.write(
            escape_control(
                f"{hold['event_id']}  case {hold['case_ref']}  held {hold['held_at']} by "
                f"{hold['held_by']}{released or ''}  {hold['reason']}".rstrip()
            )
            + "\n"
        )
    out.flush()
    return 0
