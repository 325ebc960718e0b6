"""A real full disk for tests: a small tmpfs mounted over a folder in a private mount
namespace (``unshare --user --map-root-user --mount``, no root needed), and the
scenarios run inside it.

``run_in_small_disk(folder, size_kb, argv)`` runs ``argv`` in such a namespace with a
tmpfs of ``size_kb`` on ``folder``; only that process and its children see the mount.
``python -m tests.fulldisk SCENARIO FOLDER WORK`` is the inside part: it plays one
scenario against the real code and prints a JSON report for the test to check.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

EDGE = (sys.executable, "-m", "edge")
MOUNT_SCRIPT = 'mount -t tmpfs -o size="$1"k lpr-test "$2" && shift 2 && exec "$@"'


def namespaces_available() -> str | None:
    """None when a private mount namespace can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode:
        return f"user namespaces refused: {probe.stderr.strip()}"
    return None


def run_in_small_disk(
    folder: Path, size_kb: int, argv: list[str], *, timeout: float = 300
) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            MOUNT_SCRIPT,
            "sh",
            str(size_kb),
            str(folder),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s filesystem; returns the filler to delete."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 4096
    try:
        while True:
            os.write(fd, block)
    except OSError:
        pass
    try:  # the last partial block
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    os.close(fd)
    return filler


# --------------------------------------------------------------------- scenarios


def _config(work: Path, state: Path, plates: list[str], mqtt_port: int | None = None):
    from edge.config import load_config

    (work / "watchlist.csv").write_text(
        "plate,list,reason\n" + "".join(f"{p},stolen-vehicle,test\n" for p in plates)
    )
    # One file per alert: the commands run concurrently.
    alerts = work / "alerts"
    alerts.mkdir()
    (work / "alert.sh").write_text(f"#!/bin/sh\ncat > {shlex.quote(str(alerts))}/alert-$$.json\n")
    (work / "alert.sh").chmod(0o755)
    (work / "edge.toml").write_text(
        '[vehicle]\nid = "car-1"\n'
        f'[watchlist]\npath = "{work / "watchlist.csv"}"\n'
        f'alert_command = "{work / "alert.sh"}"\n'
        # min_free_mb = 0: the test's disk is under a megabyte, and making room would
        # delete the delivered hits the tests look for.
        f'[storage]\nstate_dir = "{state}"\nmin_free_mb = 0\n'
        + (
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nreconnect_min_seconds = 0.2\n'
            if mqtt_port
            else ""
        )
    )
    return load_config(work / "edge.toml"), alerts


def _alerted(alerts: Path) -> list[str]:
    return [json.loads(p.read_text())["plate"] for p in alerts.iterdir()]


def scenario_running(disk: Path, work: Path, *, full_at_start: bool) -> dict:
    """The service's delivery path (Delivery + Dispatcher) while the disk fills, or
    with a disk already full when it starts; then space is freed."""
    from edge.delivery.outbox import Outbox
    from edge.vehicle.delivery import CONFIG_HASH_FILE, Delivery
    from tests.delivery.test_hits import make_read

    plates = ["FD1001", "FD1002", "FD1003"]
    config, alerts = _config(work, disk / "state", plates)
    report: dict = {}
    filler = None
    if full_at_start:
        (disk / "state").mkdir()
        filler = fill(disk)
    echo = io.StringIO()
    delivery = Delivery(config, echo=echo).open()
    try:
        delivery.audit_start()
        if filler is None:
            filler = fill(disk)
        hits = [delivery.dispatcher(make_read(p)) for p in plates]
        report["hits_made"] = [h.read.plate for h in hits if h is not None]
        delivery.alert.join(30)
        report["alerted"] = _alerted(alerts)
        status = delivery.status()
        report["status_outbox"] = status["outbox"]
        report["echoed"] = len(echo.getvalue().splitlines())
        marker = disk / "state" / CONFIG_HASH_FILE
        report["config_hash_bytes"] = marker.stat().st_size if marker.exists() else None
        filler.unlink()
        delivery.idle()
        report["unsaved_after_free"] = delivery.outbox.unsaved
    finally:
        delivery.close()
    with Outbox(disk / "state" / "outbox.sqlite") as outbox:
        report["in_outbox"] = sorted(
            json.loads(m.payload)["plate"] for m in outbox.pending(100) if m.kind == "hit"
        )
    return report


def scenario_sending(disk: Path, work: Path, port: int) -> dict:
    """With a broker: hits the full disk refused still reach HQ from memory, and are
    written (as delivered) once there is room."""
    from edge.delivery.outbox import Outbox
    from edge.vehicle.delivery import Delivery
    from tests.delivery.test_hits import make_read

    plates = ["FD2001", "FD2002"]
    config, _ = _config(work, disk / "state", plates, mqtt_port=port)
    report: dict = {}
    with Delivery(config) as delivery:
        assert delivery.wait_delivered(30)  # the start's audit records
        filler = fill(disk)
        for plate in plates:
            delivery.dispatcher(make_read(plate))
        report["unsaved_while_full"] = delivery.outbox.unsaved
        report["delivered_while_full"] = delivery.wait_delivered(30)
        filler.unlink()
        delivery.idle()
        report["unsaved_after_free"] = delivery.outbox.unsaved
    with Outbox(disk / "state" / "outbox.sqlite") as outbox:
        report["pending_after"] = outbox.stats().pending
    with sqlite3.connect(disk / "state" / "outbox.sqlite") as db:
        rows = db.execute(
            "SELECT payload FROM outbox WHERE kind = 'hit' AND delivered_at IS NOT NULL"
        ).fetchall()
    report["delivered_on_disk"] = sorted(json.loads(payload)["plate"] for (payload,) in rows)
    return report


def scenario_replay(disk: Path, work: Path, clip: str, plates: list[str]) -> dict:
    """`lpr-edge replay` with its state on a full disk; space freed once it says it
    waits."""
    _config(work, disk / "state", plates)
    (disk / "state").mkdir()
    filler = fill(disk)
    out = work / "analyst.jsonl"
    replay = subprocess.Popen(
        [*EDGE, "replay", "--config", str(work / "edge.toml"), "--out", str(out), clip],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    waited = False
    lines = []
    for line in replay.stderr:
        lines.append(line)
        if "wait in memory" in line and not waited:
            waited = True
            filler.unlink()
    code = replay.wait(60)
    from edge.delivery.outbox import Outbox

    with Outbox(disk / "state" / "outbox.sqlite") as outbox:
        in_outbox = sorted(
            json.loads(m.payload)["plate"] for m in outbox.pending(100) if m.kind == "hit"
        )
    return {
        "returncode": code,
        "waited": waited,
        "stderr_tail": "".join(lines[-15:]),
        "in_out_file": sorted(json.loads(x)["plate"] for x in out.read_text().splitlines()),
        "in_outbox": in_outbox,
    }


def main(argv: list[str]) -> int:
    scenario, disk, work = argv[0], Path(argv[1]), Path(argv[2])
    if scenario == "running":
        report = scenario_running(disk, work, full_at_start=False)
    elif scenario == "full-at-start":
        report = scenario_running(disk, work, full_at_start=True)
    elif scenario == "sending":
        report = scenario_sending(disk, work, int(argv[3]))
    elif scenario == "replay":
        report = scenario_replay(disk, work, argv[3], argv[4].split(","))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
