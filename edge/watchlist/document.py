"""Signed watchlists pushed by HQ: the document (``lpr.watchlist/1``), its entries to
and from JSON, and the checks every vehicle makes of it. Signing and verifying are in
:mod:`edge.watchlist.signing`, the keys in :mod:`edge.watchlist.keys`.

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
  :func:`edge.watchlist.csvfile.parse_csv`): ``plate`` a string (normalised; ``?`` and
  ``*`` wildcards), ``list`` and ``reason`` strings or null, ``priority`` 1..9 or null
  (5), ``valid_from``/``valid_until`` ISO dates or date-times or null (naive is UTC; a
  date-only ``valid_until`` lasts through that day), ``covert`` true/false or null
  (false), ``entry_id`` a string, unique in the document (null or "": the entry's
  position counted from 1). One bad entry rejects the whole document.
* ``signature.key_id`` is the first 8 bytes of SHA-256 of the signer's raw 32-byte
  Ed25519 public key, in hex. ``signature.value`` is the base64 Ed25519 signature of
  the canonical JSON of the document without its ``signature`` key::

      json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
          .encode("utf-8")

  so the payload itself may be formatted in any way.

A document is for the whole fleet (``vehicle_id`` null) or for one vehicle: its scope
(:data:`ListScope`), taken from the signed ``vehicle_id``, never from the topic it came
on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from edge.timefmt import parse_utc
from edge.watchlist.csvfile import COLUMNS, entry_checker
from edge.watchlist.lists import Watchlist, WatchlistEntry, _without_gc

SCHEMA = "lpr.watchlist/1"
ALG = "ed25519"
#: Which of a vehicle's two pushed lists a document is: for every vehicle, or for one.
ListScope = Literal["fleet", "vehicle"]
SCOPES: tuple[ListScope, ...] = ("fleet", "vehicle")

#: A million entries from the generator of `bench watchlist` take 180 MB; 256 MiB is
#: also the most that one MQTT message can carry.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_TOP_KEYS = frozenset({"schema", "version", "issued_at", "vehicle_id", "entries", "signature"})
_SIGNATURE_KEYS = frozenset({"alg", "key_id", "value"})
_ENTRY_KEYS = frozenset(COLUMNS)
_TEXT_FIELDS = ("list", "reason", "valid_from", "valid_until")


class PushRejected(Exception):
    """A pushed document was not accepted. ``code`` is short and stable, for logs and
    callers (see :func:`~edge.watchlist.signing.verify_document`); the message is for
    people. ``problems`` lists every bad entry when ``code`` is "invalid_entries"."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        self.code = code
        self.message = message
        self.problems = problems or []
        super().__init__(message)


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
