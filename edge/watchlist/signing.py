"""Signing a pushed watchlist (HQ, :func:`sign_document`) and verifying one (the
vehicle, :func:`verify_document`): the signature over the document's canonical JSON,
then the header and every entry, all or nothing (the format is in
:mod:`edge.watchlist.document`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.timefmt import iso_utc
from edge.watchlist.document import (
    _SIGNATURE_KEYS,
    ALG,
    DEFAULT_MAX_BYTES,
    SCHEMA,
    ListScope,
    PushedList,
    PushRejected,
    _check_header,
    _json,
    _keys_message,
    _parse_entries,
    _parse_json,
    canonical_bytes,
    entry_to_json,
    list_name,
    scope_of,
    valid_vehicle_id,
)
from edge.watchlist.keys import PublicKeys, key_id
from edge.watchlist.lists import Watchlist, WatchlistEntry, WatchlistError


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
