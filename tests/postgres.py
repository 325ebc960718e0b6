"""A real PostgreSQL server on a free loopback port, started and stopped by tests.

``initdb`` and ``pg_ctl`` (Debian package ``postgresql``) make and run a cluster in a
fresh folder under the system's temporary directory, never under the repository or
pytest's ``tmp_path``: a clone may sit in a folder the ``postgres`` user cannot
enter. PostgreSQL refuses to run as root, so as root the folder is handed to the
``postgres`` system user and the commands run as that user (``runuser``). Trust
authentication on 127.0.0.1 only; the unix socket lives in the same folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.mosquitto import free_port

#: The unprivileged user the server runs as when the tests run as root.
SYSTEM_USER = "postgres"
#: The database user the tests connect as (made by initdb).
DB_USER = "lpr"


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
    """One throw-away cluster; :meth:`url` names a database in it (made on demand)."""

    def __init__(self):
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (initdb and pg_ctl not found on PATH or in "
                "/usr/lib/postgresql/*/bin): apt-get install postgresql (make test installs it)"
            )
        self.bindir = bindir
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
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socketdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=50"
        )
        started = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log[-2000:]}")
        self.running = True
        return self

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
