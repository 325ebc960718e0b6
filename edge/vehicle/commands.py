"""The vehicle's maintenance commands: `lpr-edge outbox`, `purge` and `watchlist check`.

They open the vehicle's state (outbox, read log, audit trail), so they sit above the
modules they drive rather than in them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from edge.config import load_config
from edge.delivery.publish import MqttPublisher
from edge.errors import UsageError
from edge.platetext import normalize
from edge.privacy.audit import WATCHLIST_QUERY
from edge.timefmt import parse_utc
from edge.vehicle.delivery import broker_settings
from edge.vehicle.state import OUTBOX_FILE, VehicleState, open_state
from edge.watchlist.csvfile import load_watchlist
from edge.watchlist.lists import WatchlistError


def cmd_purge(args: argparse.Namespace) -> int:
    """`lpr-edge purge`: apply retention now and compact the files."""
    config = load_config(args.config)
    with open_state(config) as state:
        counts = state.retention.run(vacuum=True)
    print(json.dumps({"purged": counts.to_json(), "state_dir": str(state.state_dir)}))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """`lpr-edge outbox status|flush`: what waits for HQ, and sending it now."""
    config = load_config(args.config)
    path = config.resolve_path(config.storage.state_dir) / OUTBOX_FILE
    if not path.exists():
        print(f"no outbox at {path} (nothing was ever queued there)", file=sys.stderr)
        return 0 if args.outbox_command == "status" else 1
    with VehicleState(config) as state:
        outbox = state.outbox
        if args.outbox_command == "status":
            stats = outbox.stats()
            report = {"outbox": str(path), "delivered": stats.delivered, **stats.to_json()}
            print(json.dumps(report))
            return 0
        if not config.mqtt.host:
            print("lpr-edge outbox flush: no [mqtt] host in the configuration", file=sys.stderr)
            return 2
        if not state.claim_sender():
            print(
                "lpr-edge outbox flush: the service is running and sends the outbox itself "
                "(see 'lpr-edge status')",
                file=sys.stderr,
            )
            return 1
        pending = outbox.stats().pending
        with MqttPublisher(broker_settings(config), config.vehicle.id, outbox) as publisher:
            delivered = publisher.wait_delivered(args.timeout)
        left = outbox.stats().pending
        print(f"{pending - left} message(s) delivered, {left} left", file=sys.stderr)
        return 0 if delivered else 1


# --------------------------------------------------------------------------- watchlist check


def _fmt_time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _audit_query(config, plate: str, path: Path, at: datetime, matches) -> None:
    """Every manual query is in the audit trail before it is answered."""
    import getpass

    try:
        with VehicleState(config) as state:
            state.audit.record(
                WATCHLIST_QUERY,
                plate=plate,
                user=getpass.getuser(),
                watchlist=str(path),
                at=at.isoformat(),
                matches=[m.entry.entry_id for m in matches],
            )
    except OSError as exc:
        raise UsageError(
            f"cannot record the query in the audit trail ({exc}); not answered"
        ) from None


def cmd_watchlist_check(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist check PLATE`: every matching entry and why."""
    config = load_config(getattr(args, "config", None))
    if args.watchlist:
        path = Path(args.watchlist)
    elif config.watchlist.path:
        path = config.resolve_path(config.watchlist.path)
    else:
        raise UsageError("no watchlist: set [watchlist] path in the config or give --watchlist")
    max_distance = config.watchlist.max_distance
    if args.max_distance is not None:
        if not 0 <= args.max_distance <= 3:
            raise UsageError("--max-distance must be from 0 to 3")
        max_distance = args.max_distance
    try:
        at = parse_utc(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        raise UsageError(f"--at expected an ISO date or date-time, got {args.at!r}") from None
    plate = normalize(args.plate)
    if not plate:
        raise UsageError(f"plate {args.plate!r} has no letter or digit")
    try:
        watchlist = load_watchlist(path)
    except WatchlistError as exc:
        raise UsageError(str(exc)) from None
    matches = watchlist.explain(plate, at, max_distance=max_distance)
    _audit_query(config, plate, path, at, matches)
    print(
        f"{plate}: {len(matches) or 'no'} match{'es' if len(matches) != 1 else ''} in "
        f"{path} ({len(watchlist)} entries) at {_fmt_time(at)}, max distance {max_distance}"
    )
    for m in matches:
        e = m.entry
        print(
            f"  entry {e.entry_id} (line {e.line}): {e.plate}  {m.kind}, distance "
            f"{m.distance:g}: {m.describe()}\n"
            f"    list={e.list or '-'} priority={e.priority} covert={str(e.covert).lower()} "
            f"valid={_fmt_time(e.valid_from)}..{_fmt_time(e.valid_until)}\n"
            f"    reason: {e.reason or '-'}"
        )
    sys.stdout.flush()
    return 0 if matches else 1
