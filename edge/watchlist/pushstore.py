"""The vehicle's stored copies of its pushed lists.

A vehicle holds two pushed lists, both in force together: the **fleet** list
(``vehicle_id`` null) and its own **vehicle** list (``vehicle_id`` its id). They are
separate lists, each with its own version sequence: a document replaces only the list
of its own scope, and only with a higher version than that list's. The last document
accepted for each is kept in ``<state_dir>/watchlist-pushed-fleet.json`` and
``<state_dir>/watchlist-pushed-vehicle.json`` and checked again at every start, since a
key may have been withdrawn meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from edge.files import set_aside, sync_folder, write_private
from edge.watchlist.document import (
    DEFAULT_MAX_BYTES,
    SCOPES,
    ListScope,
    PushedList,
    PushRejected,
    list_name,
    scope_of,
)
from edge.watchlist.keys import PublicKeys
from edge.watchlist.signing import verify_document

log = logging.getLogger("edge.watchlist_push")

#: Where a vehicle keeps the last document accepted for each list, in its state_dir.
STORE_NAMES: dict[ListScope, str] = {
    "fleet": "watchlist-pushed-fleet.json",
    "vehicle": "watchlist-pushed-vehicle.json",
}
#: The one stored file of versions that held a single pushed list (migrated at start).
SINGLE_STORE_NAME = "watchlist-pushed.json"


class PushedListStore:
    """The last document accepted for each pushed list, kept as received in
    ``state_dir``: one file per list (:data:`STORE_NAMES`), mode 0600."""

    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)

    def path(self, scope: ListScope) -> Path:
        return self.state_dir / STORE_NAMES[scope]

    def save(self, scope: ListScope, payload: bytes) -> None:
        """Replace the stored copy of one list atomically: a power cut leaves the old
        or the new; the other list's copy is not touched."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Lists hold covert entries: owner-only, whatever the umask.
        write_private(self.path(scope), payload)

    def load(
        self, keys: PublicKeys, vehicle_id: str, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> dict[ListScope, PushedList]:
        """The stored lists, each checked again now. A list that is not stored or no
        longer verifies is left out (logged), so that start-up goes on with the rest."""
        self._migrate_single_file()
        stored: dict[ListScope, PushedList] = {}
        for scope in SCOPES:
            pushed = self._load(scope, keys, vehicle_id, max_bytes)
            if pushed is not None:
                stored[scope] = pushed
        return stored

    def _load(
        self, scope: ListScope, keys: PublicKeys, vehicle_id: str, max_bytes: int
    ) -> PushedList | None:
        path = self.path(scope)
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the stored pushed watchlist %s: %s", path, exc)
            return None
        try:
            pushed = verify_document(
                payload, keys, vehicle_id=vehicle_id, current_version=0, max_bytes=max_bytes
            )
        except PushRejected as exc:
            log.warning("stored pushed watchlist %s not used (%s): %s", path, exc.code, exc.message)
            return None
        except Exception:
            # A start-up must never fail on this file: the other lists still work.
            log.exception("stored pushed watchlist %s not used: unexpected error", path)
            return None
        if pushed.scope != scope:
            log.warning(
                "stored pushed watchlist %s not used: it holds %s, not the %s list",
                path,
                list_name(pushed.vehicle_id),
                scope,
            )
            return None
        return pushed

    def _migrate_single_file(self) -> None:
        """Versions before the two lists kept whichever was accepted last in one file
        (:data:`SINGLE_STORE_NAME`). It becomes the stored copy of the list its
        ``vehicle_id`` names (verified when loaded from there, like any stored copy);
        the other list comes again from its retained message. A file that is not a
        document, or a list already stored in the new form, is set aside, not deleted."""
        single = self.state_dir / SINGLE_STORE_NAME
        try:
            payload = single.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the stored pushed watchlist %s: %s", single, exc)
            return
        scope = _stored_scope(payload)
        if scope is None or self.path(scope).exists():
            why = "not a watchlist document" if scope is None else f"the {scope} list is stored"
            kept = set_aside(single, "unused")
            log.warning(
                "stored pushed watchlist %s not migrated (%s); kept as %s", single, why, kept
            )
            return
        os.replace(single, self.path(scope))
        sync_folder(self.state_dir)
        log.info("stored pushed watchlist %s moved to %s", single, self.path(scope))


def _stored_scope(payload: bytes) -> ListScope | None:
    """The scope a stored document claims, unverified; None if it is not a document."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or "vehicle_id" not in doc:
        return None
    target = doc["vehicle_id"]
    return scope_of(target) if target is None or isinstance(target, str) else None
