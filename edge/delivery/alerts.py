"""The in-car alert for a hit: a prominent log line and, if configured, a command
(``[watchlist] alert_command``, e.g. to play a sound) with the hit JSON on stdin.

A hit withdrawn (its read was a misread, :class:`~edge.delivery.hits.Withdrawal`) is told the
same way: a prominent line, and the command with the withdrawal JSON on stdin (its
``schema`` key, ``lpr.withdrawal/1``, tells the two apart).

Covert hits never come here: they go to HQ and raise nothing in the car. The command
runs on its own thread and is killed after ``COMMAND_TIMEOUT_S``, so a hung sound
player never holds up the pipeline.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading

from edge.delivery.hits import Hit, Withdrawal

log = logging.getLogger("edge.alerts")

COMMAND_TIMEOUT_S = 30.0


class InCarAlert:
    def __init__(self, command: str = ""):
        self.argv = shlex.split(command) if command else []
        self._threads: list[threading.Thread] = []

    def __call__(self, hit: Hit, payload: bytes) -> None:
        entry = hit.match.entry
        log.warning(
            "*** WATCHLIST HIT *** %s on %s (read %.0f%% sure): %s, priority %d%s "
            "(%s match of %s, entry %s)%s",
            hit.read.plate,
            hit.read.camera,
            # Calibrated: reads this sure are right about this often.
            hit.read.confidence * 100,
            entry.list or "watchlist",
            entry.priority,
            f", {entry.reason}" if entry.reason else "",
            hit.match.kind,
            entry.plate,
            entry.entry_id,
            # The pass was read another way first: this is its right plate.
            ", a corrected read" if hit.read.corrects_event_id else "",
        )
        self._command(payload, hit.event_id)

    def withdrawn(self, withdrawal: Withdrawal, payload: bytes) -> None:
        """Tell the officer a hit is withdrawn: the plate it named was a misread (the
        text it was corrected to is not a hit, so it is not shown)."""
        hit = withdrawal.withdrawn
        entry = hit.entry
        log.warning(
            "*** HIT WITHDRAWN *** %s on %s (%s, entry %s) was a misread: later views of "
            "the plate read another text; disregard the hit",
            hit.plate,
            hit.camera,
            entry.list or "watchlist",
            entry.entry_id,
        )
        self._command(payload, hit.event_id)

    def _command(self, payload: bytes, event_id: str) -> None:
        if self.argv:
            thread = threading.Thread(
                target=self._run, args=(payload, event_id), name="alert", daemon=True
            )
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _run(self, payload: bytes, event_id: str) -> None:
        try:
            done = subprocess.run(
                self.argv,
                input=payload,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("alert command for hit %s failed: %s", event_id, exc)
            return
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[:200]
            log.error("alert command for hit %s exited %d: %s", event_id, done.returncode, err)

    def join(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        """Wait for running commands (at shutdown, and in tests)."""
        for thread in self._threads:
            thread.join(timeout)
