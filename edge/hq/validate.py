"""What HQ accepts from a vehicle. A payload must be a UTF-8 JSON object; hits,
withdrawals, decisions and status are checked against the shipped JSON Schemas
(``edge/data/*.schema.json``, Draft 2020-12), audit records only for a string
``event_id`` (their schema is not fixed yet). A ``vehicle_id`` in the payload that
differs from the topic's is a reject. JSON's non-numbers (``NaN``, ``Infinity``, a
number beyond a double's range) are not JSON (RFC 8259) and are rejected as
``not-json``; an image must be base64 of a JPEG (it starts with the SOI marker) of at
most :data:`MAX_IMAGE_BYTES`. A refusal is a :class:`Reject` with a short reason.

The jsonschema package decides and explains, but it is slow (about half of HQ's CPU
per hit). Every message is first given to a validator compiled to Python code by
fastjsonschema from the same schema (:func:`fast_validator`): what it accepts is
accepted, anything else goes to jsonschema, whose verdict and reason stand. That
keeps jsonschema's verdicts and reasons exactly, provided the fast validator accepts
nothing jsonschema refuses: it may be stricter (it reads the schemas as Draft 7, and
checks ``contentEncoding``), never laxer. The one Draft 7 reading that would be laxer,
``$ref`` ignoring the keywords beside it, is removed by rewriting such a ``$ref`` as an
``allOf`` (what Draft 2020-12 means by it); tests/hq/test_hq_validate.py checks the
rest on many malformed messages.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from importlib import resources

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from edge.delivery.messages import IMAGE_KEYS

#: Larger payloads are rejected unread: the largest plate image a vehicle may send
#: (1,000,000 bytes, base64) and the rest of a hit fit well within it.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

#: Characters of a validation error kept in logs and ``rejects``.
REASON_CHARS = 200
#: The largest image (decoded) a hit may carry: the most ``[mqtt]
#: plate_image_max_bytes`` allows. The schemas cap the base64 text to match.
MAX_IMAGE_BYTES = 1_000_000
#: Every JPEG starts with the SOI marker (FF D8) followed by the next marker's FF.
JPEG_START = b"\xff\xd8\xff"


class Reject(Exception):
    """A message HQ will not store: ``kind`` is the counter's key, ``detail`` says
    why in a few words (never the payload)."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    """The validator for a shipped schema (``hit`` or ``status``), compiled once."""
    text = resources.files("edge").joinpath(f"data/{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _refs_with_siblings_as_allof(node):
    """``node`` with each ``{"$ref": R, ...}`` holding other keywords rewritten as
    ``{"allOf": [{"$ref": R}], ...}``: the same schema in Draft 2020-12, and also in
    Draft 7 (where keywords beside a ``$ref`` are ignored)."""
    if isinstance(node, list):
        return [_refs_with_siblings_as_allof(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _refs_with_siblings_as_allof(value) for key, value in node.items()}
    if "$ref" in node and len(node) > 1:
        ref = node.pop("$ref")
        node["allOf"] = [*node.get("allOf", []), {"$ref": ref}]
    return node


@functools.cache
def fast_validator(name: str):
    """A quick yes/no for a shipped schema (see the module's docstring): raises on
    anything it does not accept; what it accepts, jsonschema accepts."""
    schema = _refs_with_siblings_as_allof(schema_validator(name).schema)
    # (No defaults written into the message: it is stored as it came.)
    return fastjsonschema.compile(schema, use_default=False)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_check(name: str, message: dict) -> None:
    try:
        fast_validator(name)(message)
    except Exception:
        pass  # refused (or it failed): jsonschema decides, and says why
    else:
        return
    error = best_match(schema_validator(name).iter_errors(message))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    # The validator's message quotes the offending value; keep it short (a plate
    # image is large, and logs are no place for whole payloads).
    raise Reject("schema", _short(f"{where}: {_short(error.message, REASON_CHARS)}", REASON_CHARS))


def _refuse_constant(name: str) -> float:
    # Python's json reads NaN, Infinity and -Infinity; JSON (RFC 8259) has no such
    # numbers, and a NaN confidence compares false with every threshold.
    raise Reject("not-json", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise Reject("not-json", f"number {_short(text, 24)} is out of range")
    return value


def parse_object(payload: bytes) -> dict:
    """The payload as a JSON object with finite numbers only, or :class:`Reject`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Reject("too-large", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("not-utf8", f"byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise Reject("not-json", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError:
        # An integer of more digits than Python converts (4300).
        raise Reject("not-json", "a number too long") from None
    except RecursionError:
        raise Reject("not-json", "nested too deep") from None
    if not isinstance(value, dict):
        raise Reject("not-object", f"a JSON {type(value).__name__}")
    return value


def _same_vehicle(message: dict, vehicle_id: str) -> None:
    if message.get("vehicle_id") != vehicle_id:
        claimed = message.get("vehicle_id")
        raise Reject(
            "vehicle-mismatch",
            f"payload says {_short(repr(claimed), 40)}, topic says {vehicle_id!r}",
        )


def validate_hit(message: dict, vehicle_id: str) -> None:
    _schema_check("hit", message)
    _same_vehicle(message, vehicle_id)
    for key in IMAGE_KEYS:
        image = message.get(key)
        if image is not None:
            _check_jpeg(key, image)


def _check_jpeg(key: str, image: str) -> None:
    """An image field must be base64 of a JPEG of at most :data:`MAX_IMAGE_BYTES`:
    whatever else it is (an SVG with script, HTML) could run in a viewer that trusts
    the stored content type."""
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise Reject("bad-image", f"{key} is not base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Reject("bad-image", f"{key} is {len(data)} bytes, over {MAX_IMAGE_BYTES}")
    if not data.startswith(JPEG_START):
        raise Reject("bad-image", f"{key} is not a JPEG (no SOI marker)")


def validate_withdrawal(message: dict, vehicle_id: str) -> None:
    _schema_check("withdrawal", message)
    _same_vehicle(message, vehicle_id)


def validate_decision(message: dict, vehicle_id: str) -> None:
    """An officer's decision (``lpr.decision/1``): a vehicle decides on its own hits."""
    _schema_check("decision", message)
    _same_vehicle(message, vehicle_id)


def validate_status(message: dict, vehicle_id: str) -> None:
    _schema_check("status", message)
    _same_vehicle(message, vehicle_id)


def validate_audit(record: dict, vehicle_id: str) -> None:
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise Reject("audit-no-event-id", "no string event_id")
    if "vehicle_id" in record:
        _same_vehicle(record, vehicle_id)
