"""A real Mosquitto broker on a free loopback port, started and stopped by tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """One broker process; ``extra_config`` lines are appended to its configuration.

    By default the broker is an anonymous plaintext listener on loopback. With
    ``config_text`` that whole configuration is used instead (``extra_config`` still
    appended): it must listen on ``port`` (pass one, e.g. from :func:`free_port`)
    and should log to :attr:`log_path`.

    The port stays the same across :meth:`stop`/:meth:`start`, so outage tests can
    take the broker away and bring it back where clients expect it.
    """

    def __init__(
        self,
        workdir: Path,
        extra_config: str = "",
        port: int | None = None,
        *,
        config_text: str | None = None,
    ):
        self.binary = find_mosquitto()
        if self.binary is None:
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        if config_text is None:
            config_text = (
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence false\n"
                f"log_dest file {self.log_path}\n"
            )
        elif not config_text.endswith("\n"):
            config_text += "\n"
        self.config_path.write_text(config_text + extra_config)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RuntimeError(f"mosquitto exited at start: {err.strip()}{self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def reload(self) -> None:
        """SIGHUP: mosquitto reloads its password file, ACL and reloadable options."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("mosquitto is not running")
        self.process.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        """What the broker has logged to :attr:`log_path` so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 20) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return ("\nlog:\n" + "\n".join(tail)) if tail else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None


def durable_broker(workdir: Path) -> Broker:
    """A broker that keeps sessions (subscriptions, queued QoS 1 messages) across a
    restart, as HQ's does."""
    port = free_port()
    (workdir / "db").mkdir(exist_ok=True)
    return Broker(
        workdir,
        port=port,
        config_text=(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {workdir / 'db'}/\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        ),
    )
