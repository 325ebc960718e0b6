"""systemd service notifications (the sd_notify protocol) without libsystemd.

Under ``Type=notify`` systemd passes the path of a datagram socket in
``NOTIFY_SOCKET``; the service tells it how it is doing by sending newline-separated
``NAME=value`` assignments to that socket:

* ``READY=1`` once it is up: the unit counts as started (``TimeoutStartSec=`` stops
  running) and units ordered after it may start;
* ``STATUS=...`` a free-form line shown by ``systemctl status``;
* ``WATCHDOG=1`` the keep-alive: with ``WatchdogSec=`` set, systemd restarts the
  service when none arrives for that long (it passes the period in
  ``WATCHDOG_USEC``, and ``WATCHDOG_PID`` names the process it expects them from);
* ``STOPPING=1`` when a shutdown begins.

The socket is a path (``/run/systemd/notify``) or an abstract socket written with a
leading ``@``. Outside systemd ``NOTIFY_SOCKET`` is unset and every call is a no-op,
so the same code runs from a terminal, in tests and under systemd.

:class:`Watchdog` decides when to send ``WATCHDOG=1``: only while the pipeline makes
progress, so a hung loop stops the keep-alives and systemd restarts the service,
instead of a healthy-looking thread pinging on behalf of a dead one.

Nothing here ever raises on a failed send: a service must not die because systemd's
socket went away (it logs once and carries on).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("edge.sdnotify")

#: The environment variables of the protocol.
NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"

#: A send that cannot complete in this long (systemd not reading) is given up.
SEND_TIMEOUT_S = 1.0
#: Longest STATUS= text sent; `systemctl status` shows one line anyway.
STATUS_MAX_CHARS = 200
#: Default minimum seconds between two STATUS= updates from :class:`Watchdog`.
STATUS_EVERY_S = 10.0


def one_line(text: str, limit: int = STATUS_MAX_CHARS) -> str:
    """``text`` as a single line of at most ``limit`` characters (for ``STATUS=``)."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat


def _socket_address(value: str | None) -> bytes | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value; None when unusable."""
    if not value:
        return None
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: the name after a NUL byte, no file on disk.
        return b"\0" + os.fsencode(value[1:])
    log.warning("%s=%r is not a socket path or @abstract name; not notifying", NOTIFY_SOCKET, value)
    return None


class SystemdNotifier:
    """Sends sd_notify messages to the socket named by ``NOTIFY_SOCKET``.

    The environment is read once, when the notifier is made. With
    ``unset_environment`` the three protocol variables are then removed from
    ``os.environ`` so child processes (the alert command) do not inherit them and
    cannot speak for the service. Safe to use from any thread.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ):
        env = os.environ if environ is None else environ
        self.socket_name = env.get(NOTIFY_SOCKET) or None
        self._address = _socket_address(self.socket_name)
        self._watchdog_usec = env.get(WATCHDOG_USEC)
        self._watchdog_pid = env.get(WATCHDOG_PID)
        if unset_environment:
            for name in (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID):
                os.environ.pop(name, None)
        # Reentrant: a signal handler may notify while the main thread is sending.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._warned = False
        self._stopping_sent = False

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (we run under ``Type=notify``)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``NAME=value`` assignments in one datagram; True when it was sent.

        False, without raising, when notifications are off or the send failed; the
        first failure is logged as a warning, later ones at debug level only.
        """
        if self._address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                sock = self._sock
                if sock is None:
                    sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message, self._address)
                return True
            except OSError as exc:
                self._drop_socket()
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "systemd notification to %s failed (%s); the service goes on, "
                        "further failures are logged at debug level",
                        self.socket_name,
                        exc,
                    )
                else:
                    log.debug("systemd notification to %s failed: %s", self.socket_name, exc)
                return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up is complete (with an optional ``STATUS=`` line)."""
        fields = ["READY=1"]
        if status is not None:
            fields.append("STATUS=" + one_line(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """``STATUS=``: a one-line summary for ``systemctl status``."""
        return self.notify("STATUS=" + one_line(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive (see :class:`Watchdog` for when to send it)."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun. Sent once; later calls do nothing."""
        with self._lock:
            if self._stopping_sent:
                return False
            self._stopping_sent = True
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append("STATUS=" + one_line(status))
        return self.notify(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: start-up (or stopping) needs ``seconds`` more."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1e6))}")

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects ``WATCHDOG=1``, or None if it does not.

        From ``WATCHDOG_USEC``; when ``WATCHDOG_PID`` is set the watchdog is ours only
        if it names this process (it was meant for a parent, or a child inherited it).
        """
        if not self._watchdog_usec:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("%s=%r is not a number; watchdog off", WATCHDOG_USEC, self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                log.warning("%s=%r is not a pid; watchdog off", WATCHDOG_PID, self._watchdog_pid)
                return None
            if pid != os.getpid():
                return None
        return usec / 1e6

    def close(self) -> None:
        with self._lock:
            self._drop_socket()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watchdog:
    """``WATCHDOG=1`` only while the work makes progress, and a throttled ``STATUS=``.

    The worker calls :meth:`progress` each time it completes a unit of work (a frame
    processed, or a quiet turn while the cameras legitimately have nothing) and the
    main loop calls :meth:`maybe_ping` often. A ping goes out at most every half
    watchdog interval, and only when every source in ``sources`` reported progress
    since the previous ping. A loop stuck anywhere (a hung model call, a blocked
    queue) calls neither, and when a second thread is required too (e.g. the read
    delivery thread as ``"deliver"``), its silence holds back the pings as well:
    systemd then restarts the service after ``WatchdogSec=``.

    ``interval`` (seconds) defaults to the notifier's
    :meth:`~SystemdNotifier.watchdog_interval`; 0, or no watchdog from systemd, turns
    the pings off. ``clock`` is for tests.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        interval: float | None = None,
        sources: Iterable[str] = ("loop",),
        status_every: float = STATUS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.notifier = notifier
        if interval is None:
            interval = notifier.watchdog_interval()
        self.interval: float | None = interval if interval and interval > 0 else None
        self.sources = tuple(sources)
        if not self.sources:
            raise ValueError("Watchdog needs at least one progress source")
        self.status_every = status_every
        self._clock = clock
        self._lock = threading.Lock()
        self._fresh: set[str] = set()
        self._last_progress = dict.fromkeys(self.sources, clock())
        self._last_ping: float | None = None
        # When pings became expected (the first maybe_ping): silence is counted from
        # there, not from start-up.
        self._armed_at: float | None = None
        self._stalled: tuple[str, ...] = ()
        self._last_status_at: float | None = None
        self._last_status: str | None = None
        #: Keep-alives sent so far.
        self.pings = 0

    @property
    def enabled(self) -> bool:
        """True when systemd expects keep-alives from this process."""
        return self.interval is not None

    def progress(self, source: str = "loop") -> None:
        """A unit of work completed on ``source`` (any thread)."""
        if source not in self._last_progress:
            raise ValueError(f"unknown progress source {source!r} (known: {self.sources})")
        now = self._clock()
        with self._lock:
            self._fresh.add(source)
            self._last_progress[source] = now

    def maybe_ping(self, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` if it is due and there was progress; True if sent."""
        if self.interval is None:
            return False
        now = self._clock() if now is None else now
        if self._armed_at is None:
            self._armed_at = now
        if self._last_ping is not None and now - self._last_ping < self.interval / 2:
            return False
        with self._lock:
            silent = tuple(s for s in self.sources if s not in self._fresh)
            if silent:
                since = self._last_ping if self._last_ping is not None else self._armed_at
                waited = max(now - max(since, self._last_progress[s]) for s in silent)
                # Logged once per stall, and only once it is longer than a ping period
                # (not for the first turn of the loop, before any work was done).
                if silent != self._stalled and waited >= self.interval / 2:
                    self._stalled = silent
                    log.warning(
                        "watchdog: no progress from %s for %.1f s; keep-alives withheld "
                        "(systemd restarts the service %.0f s after the last one)",
                        ", ".join(silent),
                        waited,
                        self.interval,
                    )
                return False
            if self._stalled:
                log.info("watchdog: %s making progress again", ", ".join(self._stalled))
                self._stalled = ()
            self._fresh.clear()
        self._last_ping = now
        self.pings += 1
        self.notifier.watchdog()
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with the first ``STATUS=``, which counts as the latest)."""
        if status is not None:
            self._last_status_at = self._clock()
            self._last_status = one_line(status)
        return self.notifier.ready(status)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (once), optionally with a last ``STATUS=``."""
        return self.notifier.stopping(status)

    def maybe_status(self, summary: str | Callable[[], str], now: float | None = None) -> bool:
        """Send ``STATUS=`` with ``summary`` (a string, or a function called only when
        an update is due) at most every ``status_every`` seconds, and only when the
        line changed; True if sent."""
        now = self._clock() if now is None else now
        if self._last_status_at is not None and now - self._last_status_at < self.status_every:
            return False
        self._last_status_at = now
        text = one_line(summary() if callable(summary) else summary)
        if text == self._last_status:
            return False
        self._last_status = text
        return self.notifier.status(text)

    def tick(self, summary: str | Callable[[], str] | None = None) -> None:
        """:meth:`maybe_ping` and, with a ``summary``, :meth:`maybe_status`: the one
        call a main loop makes each turn."""
        now = self._clock()
        self.maybe_ping(now)
        if summary is not None:
            self.maybe_status(summary, now)


def status_line(cameras: Mapping[str, Mapping[str, Any]], **counts: Any) -> str:
    """A one-line service summary: each camera's state and rate, then the counts.

    ``cameras`` is :meth:`edge.vehicle.service.LiveService.camera_status`; ``counts`` are
    shown as ``name value`` in order (``None`` values are left out), e.g.
    ``front-left connected 14.9 fps, rear-right reconnecting; reads 12, hits 1``.
    Never put plate text here: the status line is readable by every local user.
    """
    parts = []
    for name, cam in cameras.items():
        state = str(cam.get("state", "?"))
        fps = cam.get("fps")
        if state == "connected" and fps is not None:
            parts.append(f"{name} {state} {float(fps):.1f} fps")
        else:
            parts.append(f"{name} {state}")
    line = ", ".join(parts) or "no cameras"
    extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v is not None)
    return one_line(f"{line}; {extra}" if extra else line)
