"""Signed watchlists pushed by HQ: the document, signing, verification, the vehicle's
stored copy, and the HQ commands `watchlist keygen`, `sign` and `verify`.

Document (a public contract, ``lpr.watchlist/1``): one JSON object, UTF-8::

    {
      "schema": "lpr.watchlist/1",
      "version": 42,                          # whole number >= 1; a vehicle takes
                                              # only a version above the one it has
      "issued_at": "2026-06-01T12:00:00.000Z",   # UTC, ISO-8601, ms and 'Z'
      "vehicle_id": null,                     # null: every vehicle; "car-17": only it
      "entries": [
        {"plate": "AB1234", "list": "stolen-vehicle", "priority": 1,
         "reason": "taken 2026-05-01", "valid_from": null,
         "valid_until": "2026-12-31T23:59:59.999999Z", "covert": false,
         "entry_id": "S1"}
      ],
      "signature": {"alg": "ed25519", "key_id": "0123456789abcdef", "value": "<base64>"}
    }

* Every key shown is required and no other is accepted, at the top level or in an
  entry: a field this version does not know could change what a hit means, so
  additions come with a new ``schema``.
* Entries carry the CSV columns with the same meaning and the same validation (see
  :func:`edge.watchlist.parse_csv`): ``plate`` a string (normalised; ``?`` and ``*``
  wildcards), ``list`` and ``reason`` strings or null, ``priority`` 1..9 or null (5),
  ``valid_from``/``valid_until`` ISO dates or date-times or null (naive is UTC; a
  date-only ``valid_until`` lasts through that day), ``covert`` true/false or null
  (false), ``entry_id`` a string, unique in the document (null or "": the entry's
  position counted from 1). One bad entry rejects the whole document.
* ``signature.key_id`` is the first 8 bytes of SHA-256 of the signer's raw 32-byte
  Ed25519 public key, in hex. ``signature.value`` is the base64 Ed25519 signature of
  the canonical JSON of the document without its ``signature`` key::

      json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
          .encode("utf-8")

  so the payload itself may be formatted in any way.

A vehicle trusts the keys in ``[watchlist] public_keys`` (each the base64 of the raw
32-byte key, or a path to a PEM public key or to a ``.pub`` file holding that base64).

A vehicle holds two pushed lists, both in force together: the **fleet** list
(``vehicle_id`` null) and its own **vehicle** list (``vehicle_id`` its id). They are
separate lists, each with its own version sequence: a document replaces only the list
of its own scope, and only with a higher version than that list's. The scope is taken
from the signed ``vehicle_id``, never from the topic it came on. The last document
accepted for each is kept in ``<state_dir>/watchlist-pushed-fleet.json`` and
``<state_dir>/watchlist-pushed-vehicle.json`` and checked again at every start, since a
key may have been withdrawn meanwhile.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.config import ConfigError
from edge.files import set_aside, sync_folder, write_private
from edge.timefmt import iso_utc, parse_utc
from edge.watchlist.csvfile import (
    COLUMNS,
    Watchlist,
    WatchlistEntry,
    WatchlistError,
    _without_gc,
    entry_checker,
    read_csv,
)

SCHEMA = "lpr.watchlist/1"
ALG = "ed25519"
#: Which of a vehicle's two pushed lists a document is: for every vehicle, or for one.
ListScope = Literal["fleet", "vehicle"]
SCOPES: tuple[ListScope, ...] = ("fleet", "vehicle")
#: Where a vehicle keeps the last document accepted for each list, in its state_dir.
STORE_NAMES: dict[ListScope, str] = {
    "fleet": "watchlist-pushed-fleet.json",
    "vehicle": "watchlist-pushed-vehicle.json",
}
#: The one stored file of versions that held a single pushed list (migrated at start).
SINGLE_STORE_NAME = "watchlist-pushed.json"
#: A million entries from the generator of `bench watchlist` take 180 MB; 256 MiB is
#: also the most that one MQTT message can carry.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
KEY_ID_BYTES = 8

_TOP_KEYS = frozenset({"schema", "version", "issued_at", "vehicle_id", "entries", "signature"})
_SIGNATURE_KEYS = frozenset({"alg", "key_id", "value"})
_ENTRY_KEYS = frozenset(COLUMNS)
_TEXT_FIELDS = ("list", "reason", "valid_from", "valid_until")

PublicKeys = Mapping[str, Ed25519PublicKey]

log = logging.getLogger("edge.watchlist_push")


class PushRejected(Exception):
    """A pushed document was not accepted. ``code`` is short and stable, for logs and
    callers (see :func:`verify_document`); the message is for people. ``problems``
    lists every bad entry when ``code`` is "invalid_entries"."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        self.code = code
        self.message = message
        self.problems = problems or []
        super().__init__(message)


class PushKeyError(ConfigError):
    """A key file or a configured public key is unusable; one problem per line."""


def scope_of(vehicle_id: str | None) -> ListScope:
    """The list a document addressed to ``vehicle_id`` (None: every vehicle) replaces."""
    return "fleet" if vehicle_id is None else "vehicle"


def list_name(vehicle_id: str | None) -> str:
    """How messages name the list a document is for."""
    return "the fleet list" if vehicle_id is None else f"vehicle {vehicle_id}'s own list"


@dataclass(frozen=True)
class PushedList:
    """A verified pushed list. ``vehicle_id`` is the document's target (None: every
    vehicle); ``watchlist`` has the document's version and scope and names it in
    ``source``."""

    watchlist: Watchlist
    version: int
    key_id: str
    issued_at: datetime
    vehicle_id: str | None

    @property
    def scope(self) -> ListScope:
        return scope_of(self.vehicle_id)


# --------------------------------------------------------------------------- keys


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A new HQ signing key and its public half."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_base64(public_key: Ed25519PublicKey) -> str:
    """The form a vehicle's ``[watchlist] public_keys`` takes, and a ``.pub`` file holds."""
    return base64.b64encode(raw_public_key(public_key)).decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex (16 characters)."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:KEY_ID_BYTES].hex()


def write_private_key(path: Path | str, private_key: Ed25519PrivateKey) -> None:
    """Write PKCS8 PEM, mode 0600; an existing file is never replaced (FileExistsError)."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created with 0600 in the same call (O_EXCL: never through someone else's file or
    # link), so there is no moment at which the key is readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask took away
        fh.write(pem)
        fh.flush()
        os.fsync(fd)


def write_public_key(path: Path | str, public_key: Ed25519PublicKey) -> None:
    """Write a ``.pub`` file: the base64 of the raw key on one line (FileExistsError if
    the file exists)."""
    with open(path, "x", encoding="ascii") as fh:
        fh.write(public_key_base64(public_key) + "\n")


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """A PKCS8 PEM Ed25519 private key (unencrypted); :class:`PushKeyError` if unusable."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise PushKeyError([f"{path}: cannot read the private key ({exc.strerror})"]) from None
    if mode & 0o077:
        log.warning("private key %s can be read by other users; chmod 600 it", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PushKeyError([f"{path}: not an unencrypted PEM private key ({exc})"]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PushKeyError([f"{path}: not an Ed25519 key ({type(key).__name__})"])
    return key


def load_public_keys(
    values: Iterable[str], base_dir: Path | str, *, label: str = "[watchlist] public_keys"
) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id. Each value is the base64 of a raw 32-byte public key, or
    a path (relative to ``base_dir``) to a PEM public key or a ``.pub`` file. Every bad
    value is named in one :class:`PushKeyError`."""
    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for value in values:
        try:
            key = _public_key(value.strip(), Path(base_dir))
        except ValueError as exc:
            problems.append(f"{label}: {value!r}: {exc}")
            continue
        keys[key_id(key)] = key
    if problems:
        raise PushKeyError(problems)
    return keys


def _public_key(value: str, base_dir: Path) -> Ed25519PublicKey:
    raw = _b64_raw_key(value)
    if raw is not None:
        return Ed25519PublicKey.from_public_bytes(raw)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"neither the base64 of a 32-byte Ed25519 public key nor a readable key file "
            f"({path}: {exc.strerror})"
        ) from None
    if b"PRIVATE KEY" in data:
        # Vehicles must only ever hold public keys: say so rather than use it.
        raise ValueError(f"{path} holds a private key; give the public key (.pub) instead")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 key ({type(key).__name__})")
        return key
    raw = _b64_raw_key(data.decode("ascii", errors="replace").strip())
    if raw is None:
        raise ValueError(f"{path}: expected a PEM public key or one line of base64 (32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _b64_raw_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


# --------------------------------------------------------------------------- documents


def valid_vehicle_id(value: str) -> bool:
    """The rule ``[vehicle] id`` follows in the config (it is part of MQTT topics)."""
    return bool(value) and all(c.isalnum() or c in "-_" for c in value)


def canonical_bytes(doc: Mapping[str, Any]) -> bytes:
    """The signed form of a document (``doc`` without its ``signature`` key)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _iso(moment: datetime | None) -> str | None:
    # Full precision, not iso_utc's milliseconds: a date-only valid_until is the last
    # microsecond of its day and must come back the same.
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry_to_json(
    entry: WatchlistEntry, times: dict[datetime | None, str | None] | None = None
) -> dict[str, Any]:
    """An entry as the document holds it. ``times`` caches the text of each time: a
    list repeats the same few dates."""
    times = {} if times is None else times
    start, until = entry.valid_from, entry.valid_until
    if start not in times:
        times[start] = _iso(start)
    if until not in times:
        times[until] = _iso(until)
    return {
        "plate": entry.plate,
        "list": entry.list,
        "priority": entry.priority,
        "reason": entry.reason,
        "valid_from": times[start],
        "valid_until": times[until],
        "covert": entry.covert,
        "entry_id": entry.entry_id,
    }


def sign_document(
    entries: Iterable[WatchlistEntry],
    version: int,
    private_key: Ed25519PrivateKey,
    *,
    vehicle_id: str | None = None,
    issued_at: datetime | None = None,
) -> bytes:
    """The signed document (UTF-8 JSON) for ``entries``.

    Raises ValueError for a version below 1 or a bad vehicle id, and
    :class:`WatchlistError` for entries every vehicle would reject (e.g. built by hand
    with priority 12), so HQ never publishes a list that no car takes."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a whole number >= 1, got {version!r}")
    if vehicle_id is not None and not valid_vehicle_id(vehicle_id):
        raise ValueError(f"vehicle_id expected letters, digits, '-' or '_', got {vehicle_id!r}")
    times: dict[datetime | None, str | None] = {}
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "version": version,
        "issued_at": iso_utc(issued_at or datetime.now(UTC)),
        "vehicle_id": vehicle_id,
        "entries": [entry_to_json(e, times) for e in entries],
    }
    problems = _parse_entries(doc["entries"])[1]
    if problems:
        raise WatchlistError(problems)
    signed = canonical_bytes(doc)
    signature = {
        "alg": ALG,
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(private_key.sign(signed)).decode("ascii"),
    }
    # The payload's own layout is free (a vehicle re-serialises to check), so the
    # signature is appended to the signed bytes rather than a large list serialised
    # twice: ``signed`` is an object, ending in "}".
    return signed[:-1] + b',"signature":' + canonical_bytes(signature) + b"}"


def verify_document(
    payload: bytes,
    keys: PublicKeys,
    *,
    vehicle_id: str,
    current_version: int | Mapping[ListScope, int],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PushedList:
    """Check a pushed document for this vehicle; the list, or :class:`PushRejected`.

    ``current_version`` is the version in force of the list the document would
    replace: by scope (the fleet list and the vehicle's own list count separately;
    a scope not there is at 0), or one number whatever the document's scope.

    Codes, in the order checked: "no_keys" (none configured), "too_large",
    "malformed" (not UTF-8 JSON, not an object, a key missing, unknown or of the wrong
    type), "schema" (another schema), "unsigned" (no signature, or not ed25519),
    "unknown_key", "bad_signature", "wrong_vehicle", "same_version" (the version held,
    e.g. a retained message delivered again: safe to ignore quietly), "stale" (older
    than the one held), "invalid_entries" (every bad entry in ``problems``).
    """
    if not keys:
        raise PushRejected("no_keys", "no public keys configured: every pushed list is refused")
    if len(payload) > max_bytes:
        raise PushRejected("too_large", f"{len(payload)} bytes, more than the {max_bytes} allowed")
    doc = _parse_json(payload)
    header = _check_header(doc)
    kid = _check_signature(doc, keys)
    # Only now, authenticated, do the target and version count: a forged copy of the
    # current version must show as bad_signature, not be ignored as a re-delivery.
    target = header["vehicle_id"]
    if target is not None and target != vehicle_id:
        raise PushRejected(
            "wrong_vehicle", f"addressed to vehicle {_json(target)}, not {vehicle_id!r}"
        )
    version = header["version"]
    if isinstance(current_version, int):
        in_force = current_version
    else:
        in_force = current_version.get(scope_of(target), 0)
    which = list_name(target)
    if version == in_force:
        raise PushRejected("same_version", f"{which}: version {version} is the one already in use")
    if version < in_force:
        raise PushRejected("stale", f"{which}: version {version} is older than {in_force} in use")
    # Drop the parsed JSON as soon as it is read: a full list is hundreds of MB.
    items = doc.pop("entries")
    del doc
    entries, problems = _parse_entries(items)
    del items
    if problems:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise PushRejected("invalid_entries", f"{len(problems)} bad entries: {shown}", problems)
    watchlist = Watchlist(
        entries,
        version=version,
        source=f"pushed {scope_of(target)} list v{version} signed by {kid}",
        scope=scope_of(target),
    )
    return PushedList(watchlist, version, kid, header["issued_at"], target)


def _parse_json(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PushRejected("malformed", f"not UTF-8 ({exc.reason})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, NaN/Infinity and integers too long to convert.
        raise PushRejected("malformed", f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise PushRejected("malformed", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_header(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything but the entries, cheaply: the fields the decision needs, parsed."""
    if doc.get("schema") != SCHEMA:
        raise PushRejected("schema", f"schema {_json(doc.get('schema'))} is not {SCHEMA!r}")
    if "signature" not in doc:
        raise PushRejected("unsigned", "the document has no signature")
    missing = sorted(_TOP_KEYS - doc.keys())
    unknown = sorted(doc.keys() - _TOP_KEYS)
    if missing or unknown:
        raise PushRejected("malformed", _keys_message(missing, unknown))
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PushRejected(
            "malformed", f"version must be a whole number >= 1, got {_json(version)}"
        )
    target = doc["vehicle_id"]
    if target is not None and (not isinstance(target, str) or not target):
        raise PushRejected("malformed", f"vehicle_id must be null or a name, got {_json(target)}")
    if not isinstance(doc["entries"], list):
        raise PushRejected("malformed", "entries must be a list")
    try:
        issued_at = parse_utc(doc["issued_at"])
    except (TypeError, AttributeError, ValueError):
        raise PushRejected(
            "malformed", f"issued_at {_json(doc['issued_at'])} is not an ISO date-time"
        ) from None
    return {"version": version, "vehicle_id": target, "issued_at": issued_at}


def _keys_message(missing: list[str], unknown: list[str]) -> str:
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if unknown:
        parts.append("unknown " + ", ".join(unknown))
    return "; ".join(parts)


def _check_signature(doc: dict[str, Any], keys: PublicKeys) -> str:
    """The signing key's id once the signature verifies."""
    sig = doc["signature"]
    if not isinstance(sig, dict) or not sig.get("value"):
        raise PushRejected("unsigned", "signature must be an object with alg, key_id, value")
    if sig.keys() != _SIGNATURE_KEYS:
        raise PushRejected(
            "malformed",
            "signature: "
            + _keys_message(
                sorted(_SIGNATURE_KEYS - sig.keys()), sorted(sig.keys() - _SIGNATURE_KEYS)
            ),
        )
    if sig["alg"] != ALG:
        raise PushRejected("unsigned", f"signature alg {_json(sig['alg'])} is not {ALG!r}")
    kid = sig["key_id"]
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise PushRejected("unknown_key", f"signed by key {_json(kid)}, which is not trusted here")
    try:
        value = base64.b64decode(sig["value"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise PushRejected("bad_signature", "signature value is not base64") from None
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        signed = canonical_bytes(body)
    except UnicodeEncodeError:
        # A lone surrogate escape ("\\ud800") parses but has no UTF-8 form.
        raise PushRejected("malformed", "a string is not valid Unicode") from None
    try:
        key.verify(value, signed)
    except InvalidSignature:
        raise PushRejected(
            "bad_signature", f"the signature does not verify with key {kid}"
        ) from None
    return kid


@_without_gc  # as parse_lines: a million new objects otherwise trigger full collections
def _parse_entries(items: list[Any]) -> tuple[list[WatchlistEntry], list[str]]:
    """Entries through the same validation as CSV rows; (entries, problems)."""
    check = entry_checker("entries[{}]".format)
    entries: list[WatchlistEntry] = []
    problems: list[str] = []
    keys, text, whole, flag = _ENTRY_KEYS, _TEXT_TYPES, _PRIORITY_TYPES, _COVERT_TYPES
    for i, item in enumerate(items):
        # The usual entry (each field there, with its JSON type) is checked inline:
        # this runs a million times for a full list. Anything else takes the slow path
        # that words each problem.
        if type(item) is dict and item.keys() == keys:
            plate, name, prio, reason = (
                item["plate"],
                item["list"],
                item["priority"],
                item["reason"],
            )
            start, until, covert, eid = (
                item["valid_from"],
                item["valid_until"],
                item["covert"],
                item["entry_id"],
            )
            if (
                type(plate) is str
                and type(name) in text
                and type(prio) in whole
                and type(reason) in text
                and type(start) in text
                and type(until) in text
                and type(covert) in flag
                and type(eid) in text
            ):
                result = check(
                    plate,
                    name or "",
                    "" if prio is None else str(prio),
                    reason or "",
                    start or "",
                    until or "",
                    "" if covert is None else "true" if covert else "false",
                    (eid or "").strip() or str(i + 1),
                    i,
                    0,
                )
                if type(result) is list:
                    problems.append(f"entries[{i}]: {'; '.join(result)}")
                elif not problems:
                    entries.append(result)
                continue
        problems.append(f"entries[{i}]: {'; '.join(_entry_type_problems(item))}")
    return entries, problems


_TEXT_TYPES = (str, type(None))
_PRIORITY_TYPES = (int, type(None))  # type() is exact: True is a bool, not an int here
_COVERT_TYPES = (bool, type(None))


def _entry_type_problems(item: Any) -> list[str]:
    """What is wrong with the shape or JSON types of an entry that is not the usual."""
    if not isinstance(item, dict):
        return [f"expected an object, got {_json(item)}"]
    bad = [f"missing field {key!r}" for key in COLUMNS if key not in item]
    bad += [
        f"unknown field {key!r} (known: {', '.join(COLUMNS)})"
        for key in sorted(item.keys() - _ENTRY_KEYS)
    ]
    # Type problems only for fields present: a missing one is already reported.
    plate = item.get("plate", "")
    if type(plate) is not str:
        bad.append(f"plate expected a string, got {_json(plate)}")
    for key in (*_TEXT_FIELDS, "entry_id"):
        value = item.get(key)
        if type(value) not in _TEXT_TYPES:
            bad.append(f"{key} expected a string or null, got {_json(value)}")
    priority = item.get("priority")
    if type(priority) not in _PRIORITY_TYPES:
        bad.append(f"priority expected a whole number or null, got {_json(priority)}")
    covert = item.get("covert")
    if type(covert) not in _COVERT_TYPES:
        bad.append(f"covert expected true, false or null, got {_json(covert)}")
    return bad


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- stored copy


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


# --------------------------------------------------------------------------- CLI


def _target(vehicle_id: str | None) -> str:
    return f"vehicle {vehicle_id}" if vehicle_id else "every vehicle"


def cmd_watchlist_keygen(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist keygen --out PREFIX`: PREFIX.key (0600) and PREFIX.pub."""
    from edge.errors import UsageError

    key_path, pub_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} already exists; not overwriting a key")
    if not key_path.parent.is_dir():
        raise UsageError(f"folder {key_path.parent} does not exist")
    private_key, public_key = generate_keypair()
    try:
        write_private_key(key_path, private_key)
    except FileExistsError:  # created since the check above
        raise UsageError(f"{key_path} already exists; not overwriting a key") from None
    except OSError as exc:
        raise UsageError(f"cannot write {key_path}: {exc.strerror}") from None
    try:
        write_public_key(pub_path, public_key)
    except OSError as exc:
        # Half a key pair is of no use and would block the next try: take it back.
        key_path.unlink()
        reason = "it already exists" if isinstance(exc, FileExistsError) else exc.strerror
        raise UsageError(f"cannot write {pub_path}: {reason}") from None
    print(f"key id:      {key_id(public_key)}")
    print(f"private key: {key_path} (mode 0600; keep it at HQ, never on a vehicle)")
    print(f"public key:  {pub_path}")
    print("vehicles trust it with, in the config's [watchlist] section:")
    print(f'public_keys = ["{public_key_base64(public_key)}"]')
    return 0


def cmd_watchlist_sign(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist sign CSV --key FILE`: the signed document for a CSV list."""
    from edge.errors import UsageError

    version = int(time.time()) if args.version is None else args.version
    if version < 1:
        raise UsageError(f"--version must be 1 or more, got {version}")
    if args.vehicle is not None and not valid_vehicle_id(args.vehicle):
        raise UsageError(f"--vehicle expected letters, digits, '-' or '_', got {args.vehicle!r}")
    try:
        entries = read_csv(args.csv)
        private_key = load_private_key(args.key)
    except (WatchlistError, PushKeyError) as exc:
        raise UsageError(str(exc)) from None
    payload = sign_document(entries, version, private_key, vehicle_id=args.vehicle)
    out = args.out
    if out in (None, "-"):
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        where = "stdout"
    else:
        try:
            # 0600 whatever the shell's umask: a list can hold covert entries.
            write_private(out, payload)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from None
        where = str(out)
    print(
        f"signed {len(entries)} entries as version {version} with key "
        f"{key_id(private_key.public_key())} for {_target(args.vehicle)}: "
        f"{len(payload)} bytes to {where}",
        file=sys.stderr,
    )
    return 0


def cmd_watchlist_verify(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist verify FILE`: would a vehicle accept this document?"""
    from edge.config import load_config
    from edge.errors import UsageError

    config = load_config(getattr(args, "config", None))
    if getattr(args, "public_key", None):
        keys = load_public_keys(args.public_key, Path.cwd(), label="--public-key")
    else:
        base = config.source_path.parent if config.source_path else Path.cwd()
        keys = load_public_keys(config.watchlist.public_keys, base)
    if not keys:
        raise UsageError("no public keys: set [watchlist] public_keys or give --public-key")
    vehicle = getattr(args, "vehicle", None) or config.vehicle.id
    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        pushed = verify_document(payload, keys, vehicle_id=vehicle, current_version=0)
    except PushRejected as exc:
        print(f"{args.file}: REJECTED for vehicle {vehicle} ({exc.code}): {exc.message}")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    print(
        f"{args.file}: OK for vehicle {vehicle}: version {pushed.version}, signed by key "
        f"{pushed.key_id}, issued {iso_utc(pushed.issued_at)}, "
        f"{len(pushed.watchlist)} entries, for {_target(pushed.vehicle_id)}"
    )
    return 0


#: How long `watchlist publish` waits for the broker to accept the document.
PUBLISH_TIMEOUT_S = 30.0
#: Where `watchlist publish` takes the broker password from when not given.
PASSWORD_ENV = "LPR_EDGE_HQ_PUBLISH_PASSWORD"


def cmd_watchlist_publish(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist publish FILE`: a signed document to the broker, retained,
    on the fleet topic or (for a one-vehicle list) that vehicle's topic."""
    import threading

    from edge.delivery.mqtt import Topics, broker_config, connect, new_client, reason_ok
    from edge.errors import UsageError

    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(payload)
    except ValueError:
        raise UsageError(f"{args.file}: not a JSON document") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "signature" not in doc:
        raise UsageError(
            f"{args.file}: not a signed {SCHEMA} document ('watchlist sign' makes one)"
        )
    try:
        config = broker_config(args, client_id="lpr-edge-hq-publish", password_env=PASSWORD_ENV)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vehicle = doc.get("vehicle_id")
    topics = Topics(config.topic_prefix, vehicle or "-")
    topic = topics.vehicle_watchlist if vehicle else topics.fleet_watchlist

    connected = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["connect"] = reason_code
        connected.set()

    def on_connect_fail(client, userdata):
        # TCP or TLS failed (paho logs the cause): no point retrying for 30 s.
        outcome["failed"] = (
            "connection failed (network, or TLS: check --ca-file, --cert-file and --key-file)"
        )
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        outcome["publish"] = reason_code

    client = new_client(config, config.client_id)
    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_publish = on_publish
    connect(client, config)
    client.loop_start()
    try:
        answered = connected.wait(PUBLISH_TIMEOUT_S)
        if not answered or "failed" in outcome or not reason_ok(outcome["connect"]):
            why = outcome.get("failed") or outcome.get("connect", "no answer")
            print(
                f"lpr-edge watchlist publish: cannot connect to {config.host}:{config.port}: {why}",
                file=sys.stderr,
            )
            return 1
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published() or not reason_ok(outcome.get("publish")):
            print(
                f"lpr-edge watchlist publish: the broker did not accept it on {topic}: "
                f"{outcome.get('publish', 'no acknowledgement')}",
                file=sys.stderr,
            )
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    print(
        f"published version {doc.get('version')} ({len(payload)} bytes) to "
        f"{_target(vehicle)} on {topic}, retained"
    )
    return 0
