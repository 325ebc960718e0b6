"""Real servers on free loopback ports, started and stopped by the tests and by
``lpr-edge bench hq``: a Mosquitto broker (:class:`Broker`) and a throw-away
PostgreSQL cluster (:class:`PostgresServer`).

PostgreSQL: ``initdb`` and ``pg_ctl`` (Debian package ``postgresql``) make and run a
cluster in a fresh folder under the system's temporary directory, never under the
repository or pytest's ``tmp_path``: a clone may sit in a folder the ``postgres``
user cannot enter. PostgreSQL refuses to run as root, so as root the folder is handed
to the ``postgres`` system user and the commands run as that user (``runuser``).
Trust authentication on 127.0.0.1 only; the unix socket lives in the same folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: The unprivileged user PostgreSQL runs as when started by root.
SYSTEM_USER = "postgres"
#: The database user clients connect as (made by initdb).
DB_USER = "lpr"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Mosquitto -------------------------------------------------------------------------


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


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
            raise RuntimeError(
                "mosquitto is not installed: apt-get install mosquitto (Debian package "
                "mosquitto; make test installs it)"
            )
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


# --- PostgreSQL ------------------------------------------------------------------------


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        folder = Path(candidate).parent
        if (folder / "pg_ctl").exists():
            return folder
    return None


class PostgresServer:
    """One throw-away cluster; :meth:`url` names a database in it (made on demand).

    By default it runs without fsync (tests want speed, not crash safety); with
    ``durable`` it keeps PostgreSQL's defaults (fsync, synchronous commit, full page
    writes), as a production server would. ``settings`` adds ``-c name=value``
    options (e.g. ``shared_buffers``)."""

    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None):
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (initdb and pg_ctl not found on PATH or in "
                "/usr/lib/postgresql/*/bin): apt-get install postgresql (Debian package "
                "postgresql; make test installs it)"
            )
        self.bindir = bindir
        self.durable = durable
        self.settings = dict(settings or {})
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lpr-edge-pg-"))
        self.datadir = self.root / "data"
        self.socketdir = self.root / "socket"
        self.log_path = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        self._databases: set[str] = set()
        self.running = False

    def _run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def start(self) -> PostgresServer:
        try:
            self._start()
        except BaseException:
            # Nothing of a cluster that did not start is left behind.
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.socketdir.mkdir()
        if self._as_root:
            try:
                user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL "
                    "as (apt-get install postgresql makes it)"
                ) from None
            for path in (self.root, self.socketdir):
                os.chown(path, user.pw_uid, user.pw_gid)
        # (mkdtemp's folder is 0700 and owned by the server's user.)
        init = self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            DB_USER,
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        # Trust on loopback TCP only (initdb's defaults otherwise refuse it).
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            + hba.read_text().replace("host ", "# host ")
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socketdir),
            "max_connections": "50",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        settings.update(self.settings)
        # Written to the cluster's own configuration, quoted as PostgreSQL reads it, rather
        # than passed through pg_ctl -o, which a shell splits at spaces.
        with (self.datadir / "postgresql.conf").open("a") as conf:
            for name, value in settings.items():
                quoted = str(value).replace("'", "''")
                conf.write(f"{name} = '{quoted}'\n")
        started = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), "-w", "-t", "60", "start"
        )
        if started.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log[-2000:]}")
        self.running = True

    def url(self, database: str = "lpr") -> str:
        """A ``postgresql://`` URL of ``database``, created empty if it does not exist."""
        if database not in self._databases:
            self.sql(f'CREATE DATABASE "{database}"', database="postgres")
            self._databases.add(database)
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def fresh_url(self, prefix: str = "t") -> str:
        """The URL of a new, empty database."""
        name = f"{prefix}_{len(self._databases)}_{time.monotonic_ns() % 10**9}"
        return self.url(name)

    def sql(self, statement: str, *, database: str = "postgres") -> None:
        import psycopg

        url = f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(statement)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)
