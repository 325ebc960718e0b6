"""Files that hold personal data: created owner-only whatever the umask, replaced
atomically, and set aside (never deleted) when they turn out to be damaged.

The systemd unit's ``UMask=0077`` covers only the edge service; the same files are
also made by `replay`, `outbox`, `purge`, `hq` and `watchlist sign` run from a shell
under umask 022, so each file is given its mode by the code that creates it.
Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

PRIVATE_MODE = 0o600


def ensure_private(path: Path | str) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist, and take group and
    other permissions off it if it does (an existing database made by an older
    version under umask 022). Done before SQLite opens a file, because SQLite creates
    its database, journal and WAL files with the umask's mode (the journal and WAL
    take the database's mode, so the main file is enough)."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path | str, data: bytes, *, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (a power cut leaves the old or the
    new content), mode 0600. ``durable`` also syncs the file and its folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    # mkstemp creates the file 0600 in the same call.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(folder)
    return path


def sync_folder(folder: Path | str) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def set_aside(path: Path | str, reason: str = "corrupt") -> Path:
    """Rename a damaged file (and its SQLite ``-wal``/``-journal``/``-shm``
    companions) to ``NAME.REASON-YYYYmmddTHHMMSSZ`` beside it, so a fresh one can be
    made while the damaged one is kept for inspection. Returns the new name."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.{reason}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{reason}-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-journal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + suffix))
    return target
