"""`lpr-edge hq`: runs :class:`edge.hq.subscriber.HqSubscriber` on a
:class:`edge.hq.store.HitStore` (SQLite, ``--db FILE``) or a
:class:`edge.hq.pgstore.PostgresStore` (``--db postgresql://...``) until SIGINT or
SIGTERM (or ``--duration``), printing each hit, conflict, withdrawal and decision
(:mod:`edge.hq.console`) and status changes, and its counts as JSON at the end.
It applies HQ's retention by itself (:class:`edge.hq.retention.PeriodicPurge`: at
start, then every ``--purge-every``; ``--keep-*`` give the periods).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sqlite3
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

from edge.config import MqttConfig
from edge.delivery.mqtt import broker_config
from edge.errors import UsageError
from edge.hq.console import (
    decision_summary_json,
    escape_control,
    format_conflict,
    format_decision,
    format_hit,
    format_withdrawal,
    hit_summary_json,
    json_line,
    withdrawal_summary_json,
)
from edge.hq.retention import DEFAULT_PURGE_EVERY, PeriodicPurge, parse_duration, policy_from_args
from edge.hq.store import DatabaseVersionError, HitStore
from edge.hq.subscriber import DEFAULT_CLIENT_ID, SHARE_GROUP, HqSubscriber
from edge.timefmt import now_iso

DEFAULT_DB = "hq-hits.sqlite"
PASSWORD_ENV = "LPR_EDGE_HQ_PASSWORD"


def _mqtt_config(args: argparse.Namespace) -> MqttConfig:
    try:
        return broker_config(args, client_id=DEFAULT_CLIENT_ID, password_env=PASSWORD_ENV)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def open_store(db: str):
    """The store ``--db`` names: PostgreSQL for a ``postgresql://`` URL, else a SQLite
    file. UsageError naming ``--db`` (and never a password) when it cannot be opened."""
    from edge.hq import pgstore

    if not pgstore.is_postgres_url(db):
        try:
            return HitStore(Path(db))
        except (sqlite3.Error, OSError, DatabaseVersionError) as exc:
            raise UsageError(f"--db {db}: cannot open: {exc}") from None
    shown = pgstore.mask_url(db)
    try:
        return pgstore.PostgresStore(db)
    except ValueError as exc:
        raise UsageError(f"--db {shown}: {exc}") from None
    except pgstore.psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(f"--db {shown}: cannot open the PostgreSQL database: {detail}") from None
    except DatabaseVersionError as exc:
        raise UsageError(f"--db {shown}: cannot open: {exc}") from None


def _share_group(args: argparse.Namespace) -> str | None:
    share = getattr(args, "share", None)
    if share is None:
        return None
    if not SHARE_GROUP.fullmatch(share):
        raise UsageError(
            f"--share {share!r}: expected 1 to 64 letters, digits, '-' or '_' (a group name)"
        )
    if getattr(args, "client_id", DEFAULT_CLIENT_ID) in (None, DEFAULT_CLIENT_ID):
        # Two workers with one client id take the session from each other in turn.
        raise UsageError(
            "--share needs a --client-id of its own for each worker (each keeps a "
            "persistent session under it; use the same one when restarting that worker)"
        )
    return share


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


def _web_options(args: argparse.Namespace) -> dict | None:
    """The console's options (``--web`` and its company), checked; None without ``--web``."""
    address = getattr(args, "web", None)
    users_file = getattr(args, "web_users", None)
    header = getattr(args, "web_trust_header", None)
    tiles = getattr(args, "map_tiles", None)
    if address is None:
        if users_file or header or tiles:
            raise UsageError("--web-users, --web-trust-header and --map-tiles need --web")
        return None
    from edge.hq.web.app import parse_web_address
    from edge.hq.web.users import Users

    host, port = parse_web_address(address)
    if users_file is None and header is None:
        raise UsageError("--web needs --web-users FILE or --web-trust-header HEADER (a login)")
    if header is not None and not _HEADER_NAME.fullmatch(header):
        raise UsageError(f"--web-trust-header {escape_control(header)!r}: not a header name")
    users = Users.load(users_file) if users_file is not None else None
    return {
        "host": host,
        "port": port,
        "users": users,
        "trust_header": header,
        "map_tiles": tiles,
        "secure_cookie": getattr(args, "web_secure_cookie", None),
    }


def cmd_hq(args: argparse.Namespace) -> int:
    config = _mqtt_config(args)
    web = _web_options(args)
    duration = getattr(args, "duration", None)
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration {duration}: expected a positive number of seconds")
    share = _share_group(args)
    policy = policy_from_args(args)
    every_text = getattr(args, "purge_every", None)
    purge_every = DEFAULT_PURGE_EVERY
    if every_text is not None:
        purge_every = parse_duration("--purge-every", every_text)
    as_json = bool(getattr(args, "json", False))
    db = str(getattr(args, "db", None) or DEFAULT_DB)
    stop = threading.Event()

    def write(line: str, stream) -> None:
        try:
            # Escaped here too: whatever a line is made of, nothing a vehicle sent
            # reaches the terminal as a control character.
            print(escape_control(line), file=stream, flush=True)
        except BrokenPipeError:
            # The reader went away: stop (the hits are stored all the same).
            # Later writes (and the interpreter's final flush) go nowhere.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            stop.set()

    console = None  # HQ's web console, when --web

    def on_hit(message: dict) -> None:
        if console is not None:
            console.hit_stored(message)
        write(json_line(hit_summary_json(message)) if as_json else format_hit(message), sys.stdout)

    def on_conflict(message: dict, first: dict) -> None:
        if console is not None:
            console.hit_stored(message, conflict=True)
        if as_json:
            summary = hit_summary_json(message)
            summary["conflict_with"] = {
                key: first.get(key) for key in ("vehicle_id", "camera", "plate", "observed_at")
            }
            write(json_line(summary), sys.stdout)
        else:
            write(format_conflict(message, first), sys.stdout)

    def on_withdrawal(message: dict, hit: dict | None) -> None:
        if console is not None:
            console.withdrawal_stored(message, hit)
        if as_json:
            write(json_line(withdrawal_summary_json(message, hit)), sys.stdout)
        else:
            write(format_withdrawal(message, hit), sys.stdout)

    def on_decision(message: dict, hit: dict | None) -> None:
        if console is not None:
            console.decision_stored(message, hit)
        if as_json:
            write(json_line(decision_summary_json(message, hit)), sys.stdout)
        else:
            write(format_decision(message, hit), sys.stdout)

    def on_status(message: dict, previous: str | None) -> None:
        if console is not None:
            console.status_changed(message, previous)
        if not as_json:
            at = message.get("at") or now_iso()
            write(f"{at} {message['vehicle_id']} {message['state']}", sys.stderr)

    store = open_store(db)
    with store:
        try:
            subscriber = HqSubscriber(
                config,
                store,
                client_id=config.client_id,
                prefix=config.topic_prefix,
                on_hit=on_hit,
                on_status=on_status,
                on_conflict=on_conflict,
                on_withdrawal=on_withdrawal,
                on_decision=on_decision,
                share=share,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UsageError(f"TLS set-up failed: {exc}") from None

        def on_signal(signum, _frame):
            # The first signal stops cleanly; a second one acts as if we had not
            # caught it (an operator's repeated Ctrl-C must always work).
            signal.signal(signum, previous[signum])
            stop.set()

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            for sig in previous:
                signal.signal(sig, on_signal)
        try:
            # The purge starts before the subscriber connects, so its round at start
            # works on what earlier runs stored (a hit that arrives already past
            # retention goes at a later round: that is the policy, not a race).
            with contextlib.ExitStack() as running:
                if web is not None:
                    from edge.hq.web.app import HqConsole
                    from edge.web.server import WebServerError

                    try:
                        console = running.enter_context(HqConsole(store, **web))
                    except WebServerError as exc:
                        raise UsageError(f"--web {args.web}: {exc}") from None
                    print(f"HQ console on {console.url}", file=sys.stderr, flush=True)
                running.enter_context(PeriodicPurge(store, policy, purge_every))
                running.enter_context(subscriber)
                stop.wait(duration)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        stats = subscriber.stats()
    stats["db"] = getattr(store, "display_url", None) or str(Path(db))
    if share is not None:
        stats["share"] = share
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0
