"""The watchlists in force on a running vehicle, and how they are replaced.

Three lists can be in force at once, and a read is matched against each (a hit's
match says which list its entry is in, :attr:`edge.watchlist.lists.WatchlistMatch.scope`):

* the **file** list, ``[watchlist] path``: reloaded whole when the file changes
  (checked every ``reload_check_seconds``). A file that fails to load keeps the
  previous list in force and the error (with its line numbers) shows in status;
* the two **pushed** lists, signed documents HQ published (:mod:`edge.watchlist.document`):
  the **fleet** list (for every vehicle) and this vehicle's own **vehicle** list. They
  are separate lists with separate version sequences: a document replaces only the
  list of its scope, and is accepted only if its signature verifies against
  ``[watchlist] public_keys``, it is addressed to this vehicle or the fleet and it is
  newer than that list's version in force. Each accepted document is kept in the
  state directory, so a car that restarts out of coverage still has both.

A new list is built completely before it replaces the old one (a reference swap),
so a match never sees half a list. Rejections are logged and kept for status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.config import Config
from edge.timefmt import iso_utc
from edge.watchlist.csvfile import read_csv
from edge.watchlist.document import SCOPES, ListScope, PushedList, PushRejected, list_name
from edge.watchlist.keys import load_public_keys
from edge.watchlist.lists import Watchlist, WatchlistError
from edge.watchlist.pushstore import PushedListStore
from edge.watchlist.signing import verify_document

log = logging.getLogger("edge.watchlist_live")


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
        # Replaced whole, never changed in place: a match reads it without the lock.
        self.pushed_lists: Mapping[ListScope, PushedList] = {}
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
        """Every list in force: the file list, then the fleet and the vehicle list."""
        pushed = self.pushed_lists
        found = (self.file_list, *(pushed[s].watchlist for s in SCOPES if s in pushed))
        return tuple(w for w in found if w is not None)

    def pushed_list(self, scope: ListScope) -> PushedList | None:
        """The fleet or the vehicle list in force, if any."""
        return self.pushed_lists.get(scope)

    def __len__(self) -> int:
        return sum(len(w) for w in self.lists())

    # ----------------------------------------------------------------- updates

    def load(self) -> None:
        """At start: the file and the stored pushed lists, whichever are there."""
        if self.store is not None:
            self.pushed_lists = self.store.load(self.keys, self.vehicle_id)
            for scope, pushed in self.pushed_lists.items():
                log.info(
                    "watchlist: %s v%d (%d entries) restored from %s",
                    list_name(pushed.vehicle_id),
                    pushed.version,
                    len(pushed.watchlist),
                    self.store.path(scope),
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
            self.file_list = Watchlist(
                entries, version=version, source=str(self.path), scope="file"
            )
            self._file_stamp = stamp
            self.file_error = None
        log.info("watchlist: %s loaded, %d entries", self.path, len(self.file_list))
        self.on_event(
            "watchlist.applied",
            {
                "source": "file",
                "scope": "file",
                "path": str(self.path),
                "version": version,
                "entries": len(entries),
            },
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
                "scope": "file",
                "path": str(self.path),
                "code": "invalid_file",
                "message": message[:500],
            },
        )
        return False

    def apply_push(self, topic: str, payload: bytes) -> bool:
        """Verify and apply a pushed document to the list of its scope (the fleet list
        or this vehicle's own); False (and logged) when it is refused."""
        with self._update:
            # Each list is checked against its own version: the fleet's and the
            # vehicle's sequences are unrelated.
            in_force = {scope: p.version for scope, p in self.pushed_lists.items()}
            try:
                pushed = verify_document(
                    payload, self.keys, vehicle_id=self.vehicle_id, current_version=in_force
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
                self.store.save(pushed.scope, payload)
            self.pushed_lists = {**self.pushed_lists, pushed.scope: pushed}
        log.info(
            "watchlist: %s v%d applied from %s: %d entries, signed by key %s",
            list_name(pushed.vehicle_id),
            pushed.version,
            topic,
            len(pushed.watchlist),
            pushed.key_id,
        )
        self.on_event(
            "watchlist.applied",
            {
                "source": topic,
                "scope": pushed.scope,
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
        """``file``, ``fleet`` and ``vehicle`` (each list's version, entries and age;
        None when there is none) and ``last_rejection``."""
        now = datetime.now(UTC)
        file_list, pushed_lists = self.file_list, self.pushed_lists
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
        pushed_status: dict[ListScope, dict | None] = dict.fromkeys(SCOPES)
        for scope, pushed in pushed_lists.items():
            pushed_status[scope] = {
                "version": pushed.version,
                "entries": len(pushed.watchlist),
                "key_id": pushed.key_id,
                "issued_at": iso_utc(pushed.issued_at),
                "age_s": round((now - pushed.issued_at).total_seconds()),
            }
        return {
            "file": file_status,
            **pushed_status,
            "last_rejection": self.last_rejection.to_json() if self.last_rejection else None,
        }
