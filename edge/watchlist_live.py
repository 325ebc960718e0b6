"""The watchlists in force on a running vehicle, and how they are replaced.

Two lists can be in force at once, and a read is matched against both:

* the **file** list, ``[watchlist] path``: reloaded whole when the file changes
  (checked every ``reload_check_seconds``). A file that fails to load keeps the
  previous list in force and the error (with its line numbers) shows in status;
* the **pushed** list, a signed document HQ published (:mod:`edge.watchlist_push`):
  accepted only if its signature verifies against ``[watchlist] public_keys``, it is
  addressed to this vehicle or the fleet and it is newer than the one in force. The
  accepted document is kept in the state directory, so a car that restarts out of
  coverage still has it.

A new list is built completely before it replaces the old one (a reference swap),
so a match never sees half a list. Rejections are logged and kept for status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.config import Config
from edge.messages import iso_utc
from edge.watchlist import Watchlist, WatchlistError, read_csv
from edge.watchlist_push import (
    PushedList,
    PushedListStore,
    PushRejected,
    load_public_keys,
    verify_document,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the last update was refused (file or push); shown in status."""

    source: str
    code: str
    message: str
    at: datetime

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "code": self.code,
            "message": self.message[:500],
            "at": iso_utc(self.at),
        }


class LiveWatchlist:
    """The lists in force; :meth:`refresh` and :meth:`apply_push` replace them."""

    def __init__(
        self,
        config: Config,
        *,
        state_dir: Path | None = None,
        on_event: Callable[[str, dict], None] | None = None,
    ):
        self.config = config
        self.vehicle_id = config.vehicle.id
        self.max_distance = config.watchlist.max_distance
        self.path = config.resolve_path(config.watchlist.path) if config.watchlist.path else None
        base = config.source_path.parent if config.source_path else Path.cwd()
        self.keys = load_public_keys(config.watchlist.public_keys, base)
        self.store = PushedListStore(state_dir) if state_dir else None
        self.file_list: Watchlist | None = None
        self.pushed: PushedList | None = None
        self.last_rejection: Rejection | None = None
        self.file_error: str | None = None
        self._file_stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        # Pushes arrive on one worker thread and file checks on the delivery thread:
        # the lock keeps one update at a time; matching never takes it.
        self._update = threading.Lock()
        # Every list applied or refused is reported (to the audit trail).
        self.on_event = on_event or (lambda action, details: None)

    # ----------------------------------------------------------------- reading

    def lists(self) -> tuple[Watchlist, ...]:
        pushed = self.pushed
        return tuple(w for w in (self.file_list, pushed.watchlist if pushed else None) if w)

    def __len__(self) -> int:
        return sum(len(w) for w in self.lists())

    # ----------------------------------------------------------------- updates

    def load(self) -> None:
        """At start: the file and the stored pushed list, whichever are there."""
        if self.store is not None:
            self.pushed = self.store.load(self.keys, self.vehicle_id)
            if self.pushed:
                log.info(
                    "watchlist: pushed list v%d (%d entries) restored from %s",
                    self.pushed.version,
                    len(self.pushed.watchlist),
                    self.store.path,
                )
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the file if it changed since it was loaded (checked at most every
        ``reload_check_seconds``). True when a new list came into force."""
        if self.path is None:
            return False
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.config.watchlist.reload_check_seconds
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            return self._file_failed(f"{self.path}: {exc.strerror or exc}", None)
        if stamp == self._file_stamp:
            return False
        with self._update:
            try:
                entries = read_csv(self.path)
            except WatchlistError as exc:
                return self._file_failed(str(exc), stamp)
            version = (self.file_list.version + 1) if self.file_list else 1
            self.file_list = Watchlist(entries, version=version, source=str(self.path))
            self._file_stamp = stamp
            self.file_error = None
        log.info("watchlist: %s loaded, %d entries", self.path, len(self.file_list))
        self.on_event(
            "watchlist.applied",
            {"source": "file", "path": str(self.path), "version": version, "entries": len(entries)},
        )
        return True

    def _file_failed(self, message: str, stamp: tuple[int, int, int] | None) -> bool:
        # Report each broken state of the file once, not at every check.
        if stamp is not None and stamp == self._file_stamp:
            return False
        self._file_stamp = stamp
        if message != self.file_error:
            kept = "the previous list stays in force" if self.file_list else "no file list"
            log.error("watchlist: %s (%s)", message, kept)
        self.file_error = message
        self.last_rejection = Rejection("file", "invalid_file", message, datetime.now(UTC))
        self.on_event(
            "watchlist.rejected",
            {
                "source": "file",
                "path": str(self.path),
                "code": "invalid_file",
                "message": message[:500],
            },
        )
        return False

    def apply_push(self, topic: str, payload: bytes) -> bool:
        """Verify and apply a pushed document; False (and logged) when it is refused."""
        with self._update:
            current = self.pushed.version if self.pushed else 0
            try:
                pushed = verify_document(
                    payload, self.keys, vehicle_id=self.vehicle_id, current_version=current
                )
            except PushRejected as exc:
                if exc.code == "same_version":
                    return False  # the retained copy of the list already in force
                self.last_rejection = Rejection(topic, exc.code, str(exc), datetime.now(UTC))
                log.error("watchlist: update on %s rejected (%s): %s", topic, exc.code, exc)
                self.on_event(
                    "watchlist.rejected",
                    {"source": topic, "code": exc.code, "message": str(exc)[:500]},
                )
                return False
            if self.store is not None:
                self.store.save(payload)
            self.pushed = pushed
        log.info(
            "watchlist: pushed list v%d applied from %s: %d entries, signed by key %s",
            pushed.version,
            topic,
            len(pushed.watchlist),
            pushed.key_id,
        )
        self.on_event(
            "watchlist.applied",
            {
                "source": topic,
                "version": pushed.version,
                "entries": len(pushed.watchlist),
                "signed_by": pushed.key_id,
                "issued_at": iso_utc(pushed.issued_at),
                "vehicle_id": pushed.vehicle_id,
            },
        )
        return True

    # ----------------------------------------------------------------- status

    def status(self) -> dict:
        now = datetime.now(UTC)
        file_list, pushed = self.file_list, self.pushed
        file_status = None
        if self.path is not None:
            file_status = {
                "path": str(self.path),
                "entries": len(file_list) if file_list else 0,
                "version": file_list.version if file_list else None,
                "loaded_at": iso_utc(file_list.loaded_at) if file_list else None,
                "age_s": round((now - file_list.loaded_at).total_seconds()) if file_list else None,
                "error": self.file_error,
            }
        pushed_status = None
        if pushed is not None:
            pushed_status = {
                "version": pushed.version,
                "entries": len(pushed.watchlist),
                "key_id": pushed.key_id,
                "issued_at": iso_utc(pushed.issued_at),
                "age_s": round((now - pushed.issued_at).total_seconds()),
            }
        return {
            "file": file_status,
            "pushed": pushed_status,
            "last_rejection": self.last_rejection.to_json() if self.last_rejection else None,
        }
