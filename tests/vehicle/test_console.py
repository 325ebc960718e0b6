"""The in-car console in a real headless Chromium, served by a real uvicorn server on
a free loopback port, over a real outbox, audit trail and Mosquitto broker.

* a replay (`lpr-edge replay --realtime`, the real pipeline on a generated clip)
  publishes hits that appear on the page as they are raised; the time from each
  hit's commit to the outbox to its appearance is recorded in the artefact folder's
  measurements.json (no timing is asserted beyond the wait);
* accept and reject with a reason reach the outbox, the broker (valid lpr.decision/1)
  and the audit trail;
* hostile hit fields (markup, script, control characters) are shown as text;
* covert hits never appear, nor their images, nor can they be decided on;
* login, the API and the event stream are refused without the token, with a wrong
  one, and a POST without the CSRF header is refused.
Screenshots go to the artefact folder (tests/browser.py).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from edge.config import load_config
from edge.delivery.messages import encode, hit_message
from edge.delivery.outbox import Outbox
from edge.privacy.audit import HIT_DECISION
from edge.synth.clips import render_clip
from edge.vehicle.console import start_console, text_diff
from edge.vehicle.delivery import Delivery
from edge.waits import poll_until
from tests.browser import artefact_path, open_browser, record_measurement, screenshot
from tests.conftest import model_path
from tests.delivery.test_delivery import CLIP, replay, summary
from tests.delivery.test_hits import make_read
from tests.delivery.test_publish import Listener
from tests.mosquitto import Broker, free_port

TOKEN = "console-test-token-0123456789"
DECISION_SCHEMA = json.loads(
    resources.files("edge").joinpath("data/decision.schema.json").read_text()
)
TIMEOUT_MS = 60_000
# Hostile contents a watchlist may legally hold (no control characters): markup.
SCRIPT_REASON = "<script>window.__pwned = 1</script>stolen"
IMG_ENTRY = "<img src=x onerror=window.__pwned=2>"


@pytest.fixture
def browser(tmp_path):
    with open_browser(tmp_path / "profile") as opened:
        yield opened


def write_config(tmp_path: Path, broker_port: int, console_port: int, rows: list[str]) -> Path:
    (tmp_path / "watchlist.csv").write_text(
        "plate,list,priority,reason,covert,entry_id\n" + "\n".join(rows) + "\n"
    )
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
        f'[storage]\nstate_dir = "state"\n'
        f'[privacy]\ncontext_image = "blurred"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        "reconnect_min_seconds = 0.2\nreconnect_max_seconds = 1.0\n"
        f'[console]\nenabled = true\nport = {console_port}\ntoken = "{TOKEN}"\n'
        'officer = "PC 4711"\n'
    )
    return path


def log_in(page, url: str) -> None:
    page.goto(f"{url}/login#token={TOKEN}")
    page.wait_for_selector("#stream-state.online", timeout=TIMEOUT_MS)


def cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#hits > li",
        """cards => cards.map(c => ({
            event_id: c.dataset.eventId, shown_at: Number(c.dataset.shownAt),
            read: c.querySelector('.read').textContent,
            text: c.innerText, decision: c.dataset.decision || null,
            fresh: c.classList.contains('fresh')}))""",
    )


def answers(url: str, path: str, **kw) -> int:
    request = urllib.request.Request(url + path, **kw)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ----------------------------------------------------------------- a replay's hits


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    model_path("platedet-int8.onnx")
    path = tmp_path_factory.mktemp("clip") / "dashcam.mp4"
    render_clip(path, CLIP)
    return path


def test_hits_of_a_replay_appear_on_the_page_as_they_are_raised(tmp_path, clip, browser):
    broker = Broker(tmp_path).start()
    port = free_port()
    # KT4821 exact at priority 1 (loud), PX507 through a look-alike (approximate),
    # AB88 covert (never shown).
    config = write_config(
        tmp_path,
        broker.port,
        port,
        [
            "KT4821,stolen-vehicle,1,stolen at gunpoint,false,e1",
            "PX5O7,wanted-person,2,driver wanted,false,e2",
            "AB88,surveillance,3,covert,true,e3",
        ],
    )
    proc = replay(config, clip, "--realtime")
    try:
        url = f"http://127.0.0.1:{port}"
        assert poll_until(lambda: _listening(port), 120, interval=0.05), "console never started"
        log_in(browser.page, url)
        page = browser.page
        # .fresh: put there by a push (newHit), not by a load of the list.
        page.wait_for_selector("#hits > li.fresh:nth-child(2)", timeout=TIMEOUT_MS)
        shown = cards(page)
        differing = page.locator("#hits .differs").all_text_contents()
        screenshot(page, "in-car-console-replay")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert summary(err)["hits"] == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
    assert sorted(c["read"].replace("≈", "") for c in shown) == ["KT4821", "PX507"]
    # Each came by push as it was raised (the page was open before the first).
    assert all(c["fresh"] for c in shown), shown
    p1 = next(c for c in shown if c["read"] == "KT4821")
    assert "P1" in p1["text"] and "exact match" in p1["text"]
    approx = next(c for c in shown if c["read"].startswith("PX507"))
    assert "≈" in approx["read"] and "approximate match" in approx["text"]
    # The one character in which the read and the entry differ is marked on both sides.
    assert sorted(differing) == ["0", "O"]
    assert browser.errors == []
    # Commit to the outbox -> on the page, per hit (one clock: this machine's).
    with Outbox(tmp_path / "state" / "outbox.sqlite") as outbox:
        latencies = {
            c["read"].rstrip("≈"): round(
                c["shown_at"] / 1000 - outbox.get(c["event_id"]).created_at, 3
            )
            for c in shown
        }
    record_measurement("in_car_console_replay_commit_to_page_s", latencies)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------- in-process car


class Car:
    """The car's delivery (outbox, audit trail, MQTT) with its console, fed reads
    directly, as the dispatcher gets them from the pipeline."""

    def __init__(self, tmp_path: Path, rows: list[str]):
        self.broker = Broker(tmp_path).start()
        self.listener = Listener(self.broker.port)
        path = write_config(tmp_path, self.broker.port, 0, rows)
        self.config = load_config(path, environ={})
        self.delivery = Delivery(self.config).open()
        self.console = start_console(self.config, self.delivery)
        self.url = self.console.url
        self.raised: dict[str, float] = {}

    def read(self, plate: str):
        hit = self.delivery.dispatcher(make_read(plate))
        self.raised[hit.event_id] = time.time()
        return hit

    def audit_records(self) -> list[dict]:
        path = self.config.state_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def close(self):
        self.console.stop()
        self.delivery.close()
        self.listener.close()
        self.broker.stop()


@pytest.fixture
def car(tmp_path):
    car = Car(
        tmp_path,
        [
            "AB1234,stolen-vehicle,1,stolen,false,e1",
            "XY987,wanted-person,2,driver wanted,false,e2",
            "CV4321,surveillance,1,covert watch,true,e3",
            f"HK1,stolen-vehicle,2,{SCRIPT_REASON},false,{IMG_ENTRY}",
        ],
    )
    yield car
    car.close()


def test_accept_and_reject_reach_the_outbox_the_broker_and_the_audit_trail(car, browser):
    page = browser.page
    log_in(page, car.url)
    accepted, rejected = car.read("AB1234"), car.read("XY987")
    for hit in (accepted, rejected):
        # .fresh: shown by the push, not by a (re)load of the list.
        page.wait_for_selector(f"li.fresh[data-event-id='{hit.event_id}']", timeout=TIMEOUT_MS)
    shown_at = {c["event_id"]: c["shown_at"] for c in cards(page)}
    record_measurement(
        "in_car_console_dispatch_to_page_s",
        {
            h.read.plate: round(shown_at[h.event_id] / 1000 - car.raised[h.event_id], 3)
            for h in (accepted, rejected)
        },
    )
    card = page.locator(f"li[data-event-id='{accepted.event_id}']")
    card.locator(".accept").click()
    page.wait_for_selector(f"li[data-event-id='{accepted.event_id}'][data-decision='accept']")
    card = page.locator(f"li[data-event-id='{rejected.event_id}']")
    card.locator(".reject").click()  # no reason chosen: refused on the page
    assert "Choose a reason" in card.locator(".decision-state").inner_text()
    card.locator(".reject-reason").select_option("plate-on-another-vehicle")
    card.locator(".note").fill("plate on a white van,\nnot the listed car")
    card.locator(".reject").click()
    page.wait_for_selector(f"li[data-event-id='{rejected.event_id}'][data-decision='reject']")
    screenshot(page, "in-car-console-decisions")
    assert car.listener.wait_for(lambda: len(set(car.listener.payloads(topic(car)))) == 2)
    received = {
        m["hit_event_id"]: m for m in map(json.loads, set(car.listener.payloads(topic(car))))
    }
    for message in received.values():
        jsonschema.validate(message, DECISION_SCHEMA)
    assert received[accepted.event_id]["decision"] == "accept"
    assert received[accepted.event_id]["officer"] == "PC 4711"
    reject = received[rejected.event_id]
    assert (reject["decision"], reject["reason"], reject["note"]) == (
        "reject",
        "plate-on-another-vehicle",
        "plate on a white van, not the listed car",
    )
    assert car.delivery.outbox.get(reject["event_id"]).topic == topic(car)
    audited = [r for r in car.audit_records() if r["action"] == HIT_DECISION]
    assert {(r["details"]["hit_event_id"], r["details"]["decision"]) for r in audited} == {
        (accepted.event_id, "accept"),
        (rejected.event_id, "reject"),
    }
    # A reload shows the decisions in force.
    page.reload()
    page.wait_for_selector(f"li[data-event-id='{rejected.event_id}'][data-decision='reject']")
    assert browser.errors == []


def topic(car: Car) -> str:
    return f"lpr/v1/{car.config.vehicle.id}/decision"


def test_hostile_fields_are_shown_as_text_and_no_script_runs(car, browser):
    page = browser.page
    log_in(page, car.url)
    from_list = car.read("HK1")
    # A hit whose text fields hold what no list should (from an older version, or a
    # damaged file): control characters, a bidirectional override, markup.
    forged = make_read("ZZ999")
    crafted = hit_message(
        dataclasses.replace(
            car.read("AB1234"),
            read=dataclasses.replace(forged, camera="<b>cam</b>"),
        )
    )
    crafted["watchlist"]["reason"] = "red\x1b[31m car \u202eesrever <svg onload=alert(3)>"
    crafted["watchlist"]["list"] = "<i>list</i>"
    car.delivery.outbox.add(
        "hit", crafted["event_id"], car.delivery.dispatcher.topics.hit, encode(crafted)
    )
    car.console.hit_raised(encode(crafted))
    for event_id in (from_list.event_id, crafted["event_id"]):
        page.wait_for_selector(f"li[data-event-id='{event_id}']", timeout=TIMEOUT_MS)
    listed = page.locator(f"li[data-event-id='{from_list.event_id}']")
    assert listed.locator(".reason").inner_text() == SCRIPT_REASON
    assert listed.locator(".entry-id").inner_text() == IMG_ENTRY
    odd = page.locator(f"li[data-event-id='{crafted['event_id']}']")
    assert odd.locator(".read").inner_text() == "AB1234≈ (voted read ZZ999)"
    assert odd.locator(".camera").inner_text() == "<b>cam</b>"
    assert odd.locator(".list").inner_text() == "<i>list</i>"
    reason = odd.locator(".reason")
    assert reason.inner_text() == "red\\x1b[31m car \\u202eesrever <svg onload=alert(3)>"
    assert reason.locator(".ctl").all_inner_texts() == ["\\x1b", "\\u202e"]
    # Nothing was parsed as markup: no element from the data, no script ran.
    assert (
        page.locator("#hits script, #hits img[src='x'], #hits svg, #hits b, #hits i").count() == 0
    )
    assert page.evaluate("window.__pwned === undefined")
    screenshot(page, "in-car-console-hostile")
    assert browser.dialogs == []


def test_covert_hits_never_appear_nor_are_served(car, browser):
    page = browser.page
    log_in(page, car.url)
    covert = car.read("CV4321")
    visible = car.read("AB1234")
    page.wait_for_selector(f"li[data-event-id='{visible.event_id}']", timeout=TIMEOUT_MS)
    assert covert.covert and car.delivery.outbox.get(covert.event_id) is not None
    assert covert.event_id not in {c["event_id"] for c in cards(page)}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with urllib.request.urlopen(
        urllib.request.Request(car.url + "/api/hits", headers=auth), timeout=10
    ) as response:
        listed = json.load(response)["hits"]
    assert [h["event_id"] for h in listed] == [visible.event_id]
    # What the page uses, nothing more (the page is all that reads this).
    assert set(listed[0]) == {
        "event_id", "plate", "matched_text", "read_runs", "entry_runs", "entry_id", "list",
        "reason", "priority", "match", "approximate", "camera", "observed_at", "position",
        "plate_image", "context_image", "withdrawn", "decision",
    }  # fmt: skip
    assert answers(car.url, f"/hits/{visible.event_id}/plate.jpg", headers=auth) == 200
    assert answers(car.url, f"/hits/{covert.event_id}/plate.jpg", headers=auth) == 404
    body = json.dumps({"decision": "accept"}).encode()
    status = answers(
        car.url,
        f"/api/hits/{covert.event_id}/decision",
        data=body,
        headers={**auth, "Content-Type": "application/json"},
        method="POST",
    )
    assert status == 404
    assert car.delivery.outbox.on_topic(topic(car)) == []
    assert "CV4321" not in page.locator("body").inner_text()


def test_login_is_enforced_and_a_post_needs_the_csrf_token(car, browser):
    page = browser.page
    hit = car.read("AB1234")
    page.goto(car.url + "/")
    assert page.url.endswith("/login")
    for path in ("/api/hits", "/api/status", "/events", f"/hits/{hit.event_id}/plate.jpg"):
        assert answers(car.url, path) == 401, path
        assert answers(car.url, path, headers={"Authorization": "Bearer nope"}) == 401, path
    page.fill("#token", "not-the-token-at-all")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error")
    screenshot(page, "in-car-console-login-refused")
    assert page.context.cookies() == []
    log_in(page, car.url)
    page.wait_for_selector(f"li[data-event-id='{hit.event_id}']", timeout=TIMEOUT_MS)
    # The session cookie alone does not make a decision: the CSRF header is needed.
    refused = page.evaluate(
        """id => fetch('/api/hits/' + id + '/decision', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({decision: 'accept'})}).then(r => r.status)""",
        hit.event_id,
    )
    assert refused == 403
    assert car.delivery.outbox.on_topic(topic(car)) == []
    screenshot(page, "in-car-console")
    assert artefact_path("in-car-console.png").exists()


def test_a_hit_pushed_while_the_list_reloads_is_kept(car, browser):
    page = browser.page
    before = car.read("AB1234")
    log_in(page, car.url)
    page.wait_for_selector(f"li[data-event-id='{before.event_id}']", timeout=TIMEOUT_MS)
    pushed = []

    def hold_the_list(route):
        # The list as the outbox held it, then a hit raised before the page has it:
        # its push arrives while the reload is still in flight.
        answer = route.fetch()
        pushed.append(car.read("XY987"))
        page.wait_for_function("document.body.dataset.queued === '1'", timeout=TIMEOUT_MS)
        route.fulfill(response=answer)

    page.route("**/api/hits", hold_the_list, times=1)
    page.reload()
    page.wait_for_selector(f"li[data-event-id='{before.event_id}']", timeout=TIMEOUT_MS)
    (hit,) = pushed
    card = page.locator(f"li.fresh[data-event-id='{hit.event_id}']")
    card.wait_for(timeout=TIMEOUT_MS)
    assert [c["event_id"] for c in cards(page)] == [hit.event_id, before.event_id]
    assert browser.errors == []


def test_an_oversized_decision_is_refused_unread(car):
    hit = car.read("AB1234")
    parts = urllib.parse.urlsplit(car.url)
    path = f"/api/hits/{hit.event_id}/decision"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    padded = json.dumps({"decision": "accept", "note": "x" * 20_000}).encode()
    # With its length declared, and chunked (no length: cut off once past the limit).
    for body, chunked in ((padded, False), (iter([padded[:5000]] * 3), True)):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("POST", path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        assert response.status == 413, chunked
        assert json.loads(response.read()) == {"error": "request too large"}
        conn.close()
    assert car.delivery.outbox.on_topic(topic(car)) == []


def test_text_diff_marks_the_differing_characters_and_not_wildcards():
    read, entry = text_diff("PX507", "PX5O7")
    assert read == [
        {"text": "PX5", "same": True},
        {"text": "0", "same": False},
        {"text": "7", "same": True},
    ]
    assert entry == [
        {"text": "PX5", "same": True},
        {"text": "O", "same": False},
        {"text": "7", "same": True},
    ]
    read, entry = text_diff("AB123", "AB1234")
    assert [r["text"] for r in read if not r["same"]] == []
    assert [r["text"] for r in entry if not r["same"]] == ["4"]
    # A wildcard entry's ? and * stand for what was read: nothing differs.
    assert text_diff("J0Y1", "J0Y*") == (
        [{"text": "J0Y1", "same": True}],
        [{"text": "J0Y*", "same": True}],
    )
