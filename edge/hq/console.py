"""What HQ shows: hits, withdrawals and conflicts as console lines or JSON lines, and
the ``edge.hq`` logger.

Every text a sender controls is shown escaped (control characters as ``\\x1b``,
``\\n``, ...) on the console and in the log (:func:`escape_control`; the logger's
filter escapes every record): a camera name holding a newline and terminal codes must
neither forge a line nor reach the operator's terminal. The schemas already refuse
such text; escaping on output does not rely on them.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from edge.delivery.messages import without_images
from edge.textrules import UNSHOWABLE, escape_char

log = logging.getLogger("edge.hq")

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or escape_char(char)


def escape_control(text: str) -> str:
    """``text`` safe for a terminal and a one-line log record: each character of
    :data:`UNSHOWABLE` written as a Python escape (``\\n``, ``\\x1b``, ``\\u202e``);
    everything else, Chinese included, as it is."""
    return UNSHOWABLE.sub(_escape_one, text)


def json_line(value: Any) -> str:
    """``value`` as one line of compact JSON for the console: like ``json.dumps``
    with ``ensure_ascii=False``, but with :data:`UNSHOWABLE` characters written as
    JSON ``\\uXXXX`` escapes (json escapes only C0 controls; DEL, C1 and the rest
    reach the terminal otherwise)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _EscapeLogRecords(logging.Filter):
    """Escapes every record HQ logs (:func:`escape_control`), so that no topic, vehicle
    id, list name or validation message a sender chose can break a log line in two
    or send codes to a terminal that shows the log. On the logger, so it applies
    whatever handler the process configured."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_control(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


log.addFilter(_EscapeLogRecords())


def hit_summary_json(message: dict) -> dict:
    """A hit for printing: each image replaced by its length in bytes
    (``plate_image_bytes``, ``context_image_bytes``)."""
    return without_images(message)


def format_hit(message: dict) -> str:
    """One human line: ``2026-11-23T08:00:01.125Z car-7 front-left AB1234
    stolen-vehicle P1 exact (entry 17)``; a match on a different listed plate names it
    (``fuzzy (entry 17: AB1284)``) and a covert entry says so at the end."""
    wl = message["watchlist"]
    entry = wl.get("entry_id") or "-"
    if wl.get("entry_plate") and wl["entry_plate"] != message["plate"]:
        entry = f"{entry}: {wl['entry_plate']}"
    line = (
        f"{message['observed_at']} {message['vehicle_id']} {message['camera']} "
        f"{message['plate']} {wl['list'] or '-'} P{wl['priority']} {wl['match']} (entry {entry})"
    )
    # Every field is the sender's: escaped, so none can end the line or drive the
    # terminal (the template itself holds no control characters).
    return escape_control(line + " covert" if wl.get("covert") else line)


def format_withdrawal(message: dict, hit: dict | None) -> str:
    """One human line: ``WITHDRAWN <hit's event id> (plate AB1238 from vehicle car-7:
    corrected in the car)``; for a hit HQ does not hold, says so."""
    what = f"plate {hit['plate']}" if hit is not None else "a hit HQ does not hold"
    return escape_control(
        f"WITHDRAWN {message['withdraws_event_id']} ({what} from vehicle "
        f"{message['vehicle_id']}: {message['reason']} in the car)"
    )


def withdrawal_summary_json(message: dict, hit: dict | None) -> dict:
    """A withdrawal for printing as JSON: the message, and the plate of the hit it
    withdraws (null when HQ does not hold that hit)."""
    return {**message, "plate": hit["plate"] if hit is not None else None}


def format_conflict(message: dict, first: dict) -> str:
    """A hit stored as a conflict: its :func:`format_hit` line marked ``CONFLICT``,
    naming the vehicle that used its ``event_id`` first."""
    return escape_control(
        f"CONFLICT {format_hit(message)} "
        f"[event_id {message['event_id']} first used by {first['vehicle_id']}]"
    )


def format_decision(message: dict, hit: dict | None) -> str:
    """One human line: ``DECISION reject <hit's event id> (plate AB1238 from vehicle
    car-7: wrong-state, officer PC 4711)``; for a hit HQ does not hold, says so."""
    what = f"plate {hit['plate']}" if hit is not None else "a hit HQ does not hold"
    why = f": {message['reason']}" if message.get("reason") else ""
    officer = f", officer {message['officer']}" if message.get("officer") else ""
    correction = f", corrects {message['supersedes']}" if message.get("supersedes") else ""
    return escape_control(
        f"DECISION {message['decision']} {message['hit_event_id']} ({what} from vehicle "
        f"{message['vehicle_id']}{why}{officer}{correction})"
    )


def decision_summary_json(message: dict, hit: dict | None) -> dict:
    """A decision for printing as JSON: the message, and the plate of the hit decided
    on (null when HQ does not hold that hit)."""
    return {**message, "plate": hit["plate"] if hit is not None else None}
