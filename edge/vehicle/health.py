"""Health of the running service: the status file and `lpr-edge status`.

The service writes the same health it sends as its MQTT heartbeat to
``status.json`` in the state directory every ``STATUS_FILE_INTERVAL_S`` seconds
(atomically: a reader never sees half a file). `lpr-edge status` reads it, so a
technician sees cameras, outbox, watchlists, GPS and disk without a broker; a file
older than ``STALE_AFTER_S`` means the service is not running (or hung).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edge.config import load_config
from edge.files import write_private
from edge.timefmt import now_iso

STATUS_FILE = "status.json"
STATUS_FILE_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0


def write_status_file(path: Path, status: dict) -> None:
    record = {"written_at": now_iso(), "written_unix": time.time(), **status}
    # Rewritten every few seconds: atomic, but not synced (a lost one is replaced soon).
    write_private(path, json.dumps(record, indent=1).encode("utf-8"), durable=False)


def summary_lines(status: dict, age_s: float) -> list[str]:
    """The status file as a few lines for a terminal."""
    if status.get("state") == "stopped":
        state = f"stopped at {status.get('written_at')}"
    elif age_s <= STALE_AFTER_S:
        state = "running"
    else:
        state = f"NOT RUNNING or hung (status {age_s:.0f} s old)"
    lines = [
        f"lpr-edge {status.get('software', '?')}: {state}, up {status.get('uptime_s', 0):.0f} s"
    ]
    for name, cam in (status.get("cameras") or {}).items():
        error = f" ({cam['last_error']})" if cam.get("last_error") else ""
        lines.append(
            f"  camera {name}: {cam.get('state')} {cam.get('fps', 0):.1f} fps, "
            f"{cam.get('frames_dropped', 0)} dropped, {cam.get('reconnects', 0)} reconnects{error}"
        )
    outbox = status.get("outbox") or {}
    alarm = f"  ALARM: {outbox['alarm']}" if outbox.get("alarm") else ""
    lines.append(f"  outbox: {outbox.get('pending', '?')} waiting for HQ{alarm}")
    broker = status.get("broker")
    if broker:
        lines.append(
            f"  broker: {'connected' if broker.get('connected') else 'NOT CONNECTED'}, "
            f"{broker.get('delivered', 0)} delivered this run"
        )
    else:
        lines.append("  broker: none configured (hits stay in the outbox)")
    wl = status.get("watchlist") or {}
    for kind in ("file", "fleet", "vehicle"):
        if wl.get(kind):
            info = wl[kind]
            lines.append(
                f"  watchlist {kind}: version {info.get('version')}, {info.get('entries')} "
                f"entries{', ERROR ' + info['error'] if info.get('error') else ''}"
            )
    if wl.get("last_rejection"):
        r = wl["last_rejection"]
        lines.append(f"  last rejected update: {r['source']} {r['code']} at {r['at']}")
    gps = status.get("gps")
    lines.append(f"  gps: {gps.get('state') if gps else 'off'}")
    clock = status.get("clock_synchronised")
    lines.append(f"  clock synchronised: {'unknown' if clock is None else clock}")
    disk = status.get("disk_free_mb")
    low = "  ALARM: low" if status.get("disk_low") else ""
    lines.append(f"  disk free: {disk if disk is not None else '?'} MB{low}")
    files = status.get("state_files") or {}
    for damaged in files.get("recovered") or []:
        rows = sum((damaged.get("rows_recovered") or {}).values())
        lines.append(
            f"  ALARM: {damaged.get('file')} was damaged ({damaged.get('error')}): kept as "
            f"{damaged.get('set_aside_as')}, {rows} row(s) recovered"
            f"{', some unreadable' if damaged.get('incomplete') else ''}"
        )
    if files.get("audit_failures"):
        lines.append(f"  ALARM: {files['audit_failures']} audit record(s) refused by the disk")
    if files.get("reads_not_logged"):
        lines.append(f"  {files['reads_not_logged']} non-hit read(s) not kept (disk refused)")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    """`lpr-edge status`: the running service's health (exit 1 if not running)."""
    config = load_config(args.config)
    path = config.resolve_path(config.storage.state_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"lpr-edge status: no {path}: the service has not run here", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"lpr-edge status: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    age = max(0.0, time.time() - float(status.get("written_unix", 0)))
    running = age <= STALE_AFTER_S and status.get("state") != "stopped"
    if args.json:
        print(json.dumps({**status, "age_s": round(age, 1), "running": running}))
    else:
        print("\n".join(summary_lines(status, age)))
    return 0 if running else 1
