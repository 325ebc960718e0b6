"""The officer's decision on a hit: accept (it is the listed vehicle) or reject with a
reason code (``lpr.decision/1``, ``edge/data/decision.schema.json``).

A decision is committed to the outbox before it is acknowledged to the officer, on
``{prefix}/{vehicle_id}/decision``, behind the hit it names: it survives broker
outages and restarts as hits do, and HQ gets it after the hit. It is kept there as
the car's record of the decision (outbox kind ``hit``: retention treats it as the
hit it belongs to), and recorded in the audit trail by the owner's ``audit`` callable.

Only a hit the car still holds, not covert, can be decided on: a covert hit is never
shown in the car, so a decision naming one is refused as if the hit were unknown.
Deciding again on the same hit is allowed (a slip of the finger must be correctable,
and HQ must see both): each decision is a new message whose ``supersedes`` names the
previous one, and the verdict in force is the one no other supersedes: the car's own
order (its outbox's), never decided_at, which a step of the car's clock could reorder.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.delivery.messages import HIT_SCHEMA, encode
from edge.delivery.mqtt import Topics
from edge.delivery.outbox import Outbox
from edge.ids import new_event_id
from edge.textrules import unshowable_in
from edge.timefmt import iso_utc

DECISION_SCHEMA = "lpr.decision/1"
DECISIONS = ("accept", "reject")
#: The longest note, in characters: a remark, not a report.
NOTE_MAX_LENGTH = 280
OFFICER_MAX_LENGTH = 64
# Line breaks and tabs in a note are the officer's typing, not an attack: spaces.
_WHITESPACE_RUNS = re.compile(r"[\t\r\n\u2028\u2029 ]+")


class DecisionRefused(ValueError):
    """A decision that cannot be taken; ``status`` is the HTTP status that says why
    (400 bad request, 404 no such hit)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Decision:
    event_id: str
    hit_event_id: str
    vehicle_id: str
    decision: str
    reason: str | None
    note: str | None
    officer: str | None
    decided_at: datetime
    supersedes: str | None


def decision_message(decision: Decision) -> dict:
    """A decision as published on ``{prefix}/{vehicle_id}/decision``."""
    return {
        "schema": DECISION_SCHEMA,
        "event_id": decision.event_id,
        "hit_event_id": decision.hit_event_id,
        "vehicle_id": decision.vehicle_id,
        "decision": decision.decision,
        "reason": decision.reason,
        "note": decision.note,
        "officer": decision.officer,
        "decided_at": iso_utc(decision.decided_at),
        "supersedes": decision.supersedes,
    }


def clean_note(note: str | None) -> str | None:
    """The note as one line (runs of spaces, tabs and line breaks made one space),
    None when empty; refused when too long or holding other control or invisible
    characters (they have no place in a remark, and could hide text at HQ)."""
    if note is None:
        return None
    if not isinstance(note, str):
        raise DecisionRefused("note: expected text")
    note = _WHITESPACE_RUNS.sub(" ", note).strip()
    if not note:
        return None
    if (bad := unshowable_in(note)) is not None:
        raise DecisionRefused(f"note: holds a control or invisible character ({bad})")
    if len(note) > NOTE_MAX_LENGTH:
        raise DecisionRefused(f"note: longer than {NOTE_MAX_LENGTH} characters")
    return note


class DecisionDesk:
    """Takes the officer's decisions: checks them against the hits the outbox holds,
    commits each to the outbox, audits it and wakes the sender."""

    def __init__(
        self,
        outbox: Outbox,
        topics: Topics,
        *,
        reject_reasons: Sequence[str],
        officer: str = "",
        audit: Callable[[dict], object] = lambda details: None,
        sent: Callable[[], None] = lambda: None,
    ):
        self.outbox = outbox
        self.topics = topics
        self.reject_reasons = tuple(reject_reasons)
        self.officer = officer or None
        self.audit = audit
        self.sent = sent
        # One decision at a time: 'supersedes' must name the one really before it.
        self._lock = threading.Lock()

    def hit(self, hit_event_id: str) -> dict | None:
        """The hit message the car holds under this id, if it is a hit the officer may
        see (not covert, not a withdrawal); None otherwise."""
        message = self.outbox.get(hit_event_id) if isinstance(hit_event_id, str) else None
        if message is None or message.topic != self.topics.hit:
            return None
        try:
            hit = json.loads(message.payload)
        except ValueError:
            return None
        if not isinstance(hit, dict) or hit.get("schema") != HIT_SCHEMA:
            return None
        if (hit.get("watchlist") or {}).get("covert") is not False:
            return None
        return hit

    def decide(
        self,
        hit_event_id: str,
        decision: str,
        reason: str | None = None,
        note: str | None = None,
        *,
        at: datetime | None = None,
    ) -> dict:
        """Take a decision; returns its message. Raises :class:`DecisionRefused`."""
        if decision not in DECISIONS:
            raise DecisionRefused("decision: expected 'accept' or 'reject'")
        if decision == "reject":
            if reason not in self.reject_reasons:
                raise DecisionRefused("reason: a reject needs one of the configured reasons")
        elif reason not in (None, ""):
            raise DecisionRefused("reason: an accept takes no reason")
        else:
            reason = None
        note = clean_note(note)
        hit = self.hit(hit_event_id)
        if hit is None:
            raise DecisionRefused("no such hit in this car", status=404)
        with self._lock:
            previous = self.latest([hit_event_id]).get(hit_event_id)
            taken = Decision(
                event_id=new_event_id(),
                hit_event_id=hit_event_id,
                vehicle_id=self.topics.vehicle_id,
                decision=decision,
                reason=reason,
                note=note,
                officer=self.officer,
                decided_at=at or datetime.now(UTC),
                supersedes=previous["event_id"] if previous else None,
            )
            message = decision_message(taken)
            self.outbox.add("hit", taken.event_id, self.topics.decision, encode(message))
        self.audit(
            {
                "hit_event_id": hit_event_id,
                "decision_event_id": taken.event_id,
                "plate": hit.get("plate"),
                "decision": decision,
                "reason": reason,
                "officer": taken.officer,
                "supersedes": taken.supersedes,
            }
        )
        self.sent()
        return message

    def latest(self, hit_event_ids: Iterable[str] | None = None) -> dict[str, dict]:
        """The decision in force (the last the car took, which supersedes the ones
        before) of each hit, by hit event id; of every hit when ``hit_event_ids`` is
        None."""
        wanted = None if hit_event_ids is None else set(hit_event_ids)
        found: dict[str, dict] = {}
        # Newest first: the first seen of each hit is the one in force.
        for message in self.outbox.on_topic(self.topics.decision):
            try:
                decision = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(decision, dict):
                continue
            hit_id = decision.get("hit_event_id")
            if hit_id in found or (wanted is not None and hit_id not in wanted):
                continue
            found[hit_id] = decision
        return found
