"""The demo's report of the hits its outbox holds, when that outbox also holds an
officer's decision and a withdrawal (outbox kind "hit" too, and no hit)."""

from __future__ import annotations

from edge.bench.demo import report_hits
from edge.delivery.decisions import DecisionDesk
from edge.delivery.messages import WITHDRAWAL_SCHEMA, encode
from edge.delivery.outbox import Outbox
from edge.ids import new_event_id
from edge.vehicle.state import OUTBOX_FILE
from tests.delivery.test_decisions import REASONS, TOPICS, add_hit


def test_the_report_lists_hits_only(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    with Outbox(tmp_path / "state" / OUTBOX_FILE) as box:
        decided = add_hit(box, "AB1234")
        withdrawn = add_hit(box, "XY987")
        DecisionDesk(box, TOPICS, reject_reasons=REASONS).decide(decided, "accept")
        withdrawal = {
            "schema": WITHDRAWAL_SCHEMA,
            "event_id": new_event_id(),
            "vehicle_id": "car-1",
            "withdraws_event_id": withdrawn,
            "reason": "misread",
        }
        box.add("hit", withdrawal["event_id"], TOPICS.hit, encode(withdrawal))
        assert len([m for m in box.pending(1000) if m.kind == "hit"]) == 4
    report_hits(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 watchlist hit(s) kept in")
    assert [line.split()[0] for line in lines[1:]] == ["AB1234", "XY987"]
