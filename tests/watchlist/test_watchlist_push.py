from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge.errors import UsageError
from edge.hq.pushtools import cmd_watchlist_keygen, cmd_watchlist_sign, cmd_watchlist_verify
from edge.watchlist.csvfile import parse_csv
from edge.watchlist.document import PushRejected, canonical_bytes
from edge.watchlist.keys import (
    PushKeyError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
    public_key_base64,
    write_private_key,
    write_public_key,
)
from edge.watchlist.lists import WatchlistEntry, WatchlistError
from edge.watchlist.pushstore import SINGLE_STORE_NAME, STORE_NAMES, PushedListStore
from edge.watchlist.signing import sign_document, verify_document

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ISSUED = datetime(2026, 5, 31, 8, 30, 0, 125000, tzinfo=UTC)
CSV = (
    "plate,list,priority,reason,valid_from,valid_until,covert,entry_id\n"
    "AB1234,stolen-vehicle,1,taken 2026-05-01,,,true,S1\n"
    "XY?9*,wanted-person,2,,2026-01-01T08:00,2026-12-31,,W7\n"
    "CD 567,missing-person,,,,2026-05-31,false,\n"
    "ET1,,,naïve reason ✓,,,,U1\n"
)


@pytest.fixture
def entries() -> list[WatchlistEntry]:
    return parse_csv(CSV, "hq.csv")


@pytest.fixture
def hq():
    private_key, public_key = generate_keypair()
    return private_key, {key_id(public_key): public_key}


def verify(payload: bytes, keys, vehicle: str = "car-17", current: int = 0, **kwargs):
    return verify_document(payload, keys, vehicle_id=vehicle, current_version=current, **kwargs)


def rejected(payload: bytes, keys, **kwargs) -> PushRejected:
    with pytest.raises(PushRejected) as info:
        verify(payload, keys, **kwargs)
    return info.value


def signed_raw(doc: dict, private_key) -> bytes:
    """Sign any document, however wrong, as HQ's key would: for the checks that come
    after the signature."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = {
        "alg": "ed25519",
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(private_key.sign(canonical_bytes(body))).decode(),
    }
    return json.dumps({**body, "signature": sig}).encode()


def good_doc(entries, private_key, **kwargs) -> dict:
    return json.loads(sign_document(entries, 42, private_key, issued_at=ISSUED, **kwargs))


# --- document round trip -----------------------------------------------------------------


def test_round_trip_keeps_entries_and_matches(entries, hq):
    private_key, keys = hq
    payload = sign_document(entries, 42, private_key, issued_at=ISSUED)
    pushed = verify(payload, keys)
    kid = next(iter(keys))
    assert (pushed.version, pushed.key_id, pushed.issued_at, pushed.vehicle_id) == (
        42,
        kid,
        ISSUED,
        None,
    )
    wl = pushed.watchlist
    assert (wl.version, wl.source, wl.scope) == (
        42,
        f"pushed fleet list v42 signed by {kid}",
        "fleet",
    )
    # Same entries, in order; only the CSV line numbers are not carried.
    assert sorted(wl.entries(), key=lambda e: e.entry_id) == sorted(
        (dataclasses.replace(e, line=0) for e in entries), key=lambda e: e.entry_id
    )
    m = wl.match("A8 1234", at=AT)
    assert m is not None and m.entry.entry_id == "S1" and m.kind == "fuzzy" and m.entry.covert
    assert m.scope == "fleet"  # which list named the plate
    m = wl.match("XY19ZZ", at=AT)
    assert m is not None and m.entry.entry_id == "W7" and m.kind == "wildcard"
    # The date-only valid_until still lasts to the end of its day.
    (cd,) = (e for e in wl.entries() if e.plate == "CD567")
    assert cd.entry_id == "4" and cd.valid_at(datetime(2026, 5, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert wl.match("CD567", at=AT) is None  # expired on 2026-05-31


def test_document_format(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key, vehicle_id="car-17")
    assert set(doc) == {"schema", "version", "issued_at", "vehicle_id", "entries", "signature"}
    assert (doc["schema"], doc["version"], doc["vehicle_id"]) == ("lpr.watchlist/1", 42, "car-17")
    assert doc["issued_at"] == "2026-05-31T08:30:00.125Z"
    assert doc["entries"][0] == {
        "plate": "AB1234",
        "list": "stolen-vehicle",
        "priority": 1,
        "reason": "taken 2026-05-01",
        "valid_from": None,
        "valid_until": None,
        "covert": True,
        "entry_id": "S1",
    }
    assert doc["entries"][1]["valid_from"] == "2026-01-01T08:00:00Z"
    sig = doc["signature"]
    assert sig["alg"] == "ed25519" and sig["key_id"] == next(iter(keys))
    assert len(base64.b64decode(sig["value"])) == 64
    # The signature covers the canonical JSON without the signature key.
    public_key = private_key.public_key()
    body = {k: v for k, v in doc.items() if k != "signature"}
    public_key.verify(base64.b64decode(sig["value"]), canonical_bytes(body))


def test_key_id_is_the_first_8_bytes_of_sha256_of_the_raw_key():
    _, public_key = generate_keypair()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public_key) == hashlib.sha256(raw).hexdigest()[:16]


def test_payload_layout_is_free_and_unicode_is_kept(hq):
    private_key, keys = hq
    entries = parse_csv("plate,reason\nAB1,naïve ✓ 東\n")
    doc = json.loads(sign_document(entries, 3, private_key))
    for payload in (
        json.dumps(doc, indent=2).encode(),  # ASCII escapes, other order and spacing
        json.dumps(doc, ensure_ascii=False).encode(),
    ):
        (e,) = verify(payload, keys).watchlist.entries()
        assert e.reason == "naïve ✓ 東"


def test_addressed_list_is_for_that_vehicle_only(entries, hq):
    private_key, keys = hq
    payload = sign_document(entries, 5, private_key, vehicle_id="car-17")
    assert verify(payload, keys, vehicle="car-17").vehicle_id == "car-17"
    assert rejected(payload, keys, vehicle="car-18").code == "wrong_vehicle"


def test_any_trusted_key_verifies(entries, hq):
    private_key, keys = hq
    other_private, other_public = generate_keypair()
    keys = {**keys, key_id(other_public): other_public}
    for signer in (private_key, other_private):
        pushed = verify(sign_document(entries, 1, signer), keys)
        assert pushed.key_id == key_id(signer.public_key())


def test_sign_refuses_what_vehicles_would_reject(entries, hq):
    private_key, _ = hq
    with pytest.raises(WatchlistError, match=r"entries\[1\]: priority '12'"):
        sign_document([entries[0], WatchlistEntry("AB1", priority=12)], 1, private_key)
    with pytest.raises(ValueError, match="version"):
        sign_document(entries, 0, private_key)
    with pytest.raises(ValueError, match="vehicle_id"):
        sign_document(entries, 1, private_key, vehicle_id="car/17")


# --- rejections --------------------------------------------------------------------------


def test_tampering_after_signing_is_a_bad_signature(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    for change in (
        lambda d: d["entries"][0].update(plate="ZZ9999"),
        lambda d: d["entries"][0].update(covert=False),
        lambda d: d["entries"].pop(),
        lambda d: d.update(version=43),
        lambda d: d.update(vehicle_id="car-17"),
        lambda d: d.update(issued_at="2027-01-01T00:00:00.000Z"),
    ):
        tampered = json.loads(json.dumps(doc))
        change(tampered)
        assert rejected(json.dumps(tampered).encode(), keys).code == "bad_signature"


def test_a_forged_copy_of_the_current_version_is_not_taken_for_a_redelivery(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    doc["entries"][0]["plate"] = "ZZ9999"
    assert rejected(json.dumps(doc).encode(), keys, current=42).code == "bad_signature"


def test_signature_missing_or_unusable(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    assert rejected(json.dumps(unsigned).encode(), keys).code == "unsigned"
    for sig, code in [
        (None, "unsigned"),
        ({}, "unsigned"),
        ({**doc["signature"], "alg": "rsa"}, "unsigned"),
        ({**doc["signature"], "value": "not base64!"}, "bad_signature"),
        ({**doc["signature"], "value": base64.b64encode(b"x" * 64).decode()}, "bad_signature"),
        ({**doc["signature"], "value": base64.b64encode(b"short").decode()}, "bad_signature"),
        ({**doc["signature"], "extra": 1}, "malformed"),
    ]:
        payload = json.dumps({**doc, "signature": sig}).encode()
        assert rejected(payload, keys).code == code, sig


def test_unknown_key(entries, hq):
    _, keys = hq
    stranger, _ = generate_keypair()
    error = rejected(sign_document(entries, 1, stranger), keys)
    assert error.code == "unknown_key" and key_id(stranger.public_key()) in error.message


def test_no_keys_configured_rejects_everything(entries, hq):
    private_key, _ = hq
    error = rejected(sign_document(entries, 1, private_key), {})
    assert error.code == "no_keys" and "no public keys configured" in error.message


def test_versions_only_go_up(entries, hq):
    private_key, keys = hq
    payload = sign_document(entries, 42, private_key)
    assert verify(payload, keys, current=41).version == 42
    assert rejected(payload, keys, current=42).code == "same_version"
    assert rejected(payload, keys, current=43).code == "stale"


def test_the_fleet_list_and_the_vehicles_own_list_have_separate_versions(entries, hq):
    private_key, keys = hq
    in_force = {"fleet": 7, "vehicle": 6}
    fleet = {v: sign_document(entries, v, private_key) for v in (6, 7, 8)}
    own = {v: sign_document(entries, v, private_key, vehicle_id="car-17") for v in (5, 6, 7)}
    # Fleet v8 is checked against the fleet's v7, not the vehicle's; and the other way.
    assert verify(fleet[8], keys, current=in_force).watchlist.scope == "fleet"
    assert verify(own[7], keys, current=in_force).watchlist.scope == "vehicle"
    # Replay protection stays, per list.
    stale = rejected(fleet[6], keys, current=in_force)
    assert stale.code == "stale" and stale.message.startswith("the fleet list: version 6")
    stale = rejected(own[5], keys, current=in_force)
    assert stale.code == "stale"
    assert stale.message == "vehicle car-17's own list: version 5 is older than 6 in use"
    assert rejected(fleet[7], keys, current=in_force).code == "same_version"
    assert rejected(own[6], keys, current=in_force).code == "same_version"
    # A list with nothing in force takes any version.
    assert verify(own[5], keys, current={"fleet": 7}).version == 5


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'"text"',
        b'{"schema": "lpr.watchlist/1", "version": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"schema": "lpr.watchlist/1", "version": 1' + b"0" * 5000 + b"}",
    ],
)
def test_malformed_payloads(payload, hq):
    _, keys = hq
    assert rejected(payload, keys).code == "malformed"


def test_header_problems(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    assert rejected(signed_raw({**doc, "schema": "lpr.watchlist/2"}, private_key), keys).code == (
        "schema"
    )
    for change in (
        {"version": 0},
        {"version": "43"},
        {"version": True},
        {"version": 4.5},
        {"vehicle_id": 17},
        {"vehicle_id": ""},
        {"issued_at": "yesterday"},
        {"issued_at": None},
        {"entries": {"plate": "AB1"}},
        {"extra": "field"},
    ):
        error = rejected(signed_raw({**doc, **change}, private_key), keys)
        assert error.code == "malformed", change
    without_version = {k: v for k, v in doc.items() if k != "version"}
    error = rejected(signed_raw(without_version, private_key), keys)
    assert error.code == "malformed" and "missing version" in error.message


def test_too_large(entries, hq):
    private_key, keys = hq
    payload = sign_document(entries, 1, private_key)
    assert verify(payload, keys, max_bytes=len(payload)).version == 1
    assert rejected(payload, keys, max_bytes=len(payload) - 1).code == "too_large"


def test_bad_entries_reject_the_whole_list_naming_each(entries, hq):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    doc["entries"] += [
        {**doc["entries"][0], "entry_id": "B1", "priority": 12},
        {**doc["entries"][0], "entry_id": "B2", "plate": "A#1"},
        {**doc["entries"][0], "entry_id": "S1"},
        {**doc["entries"][0], "entry_id": "B3", "priority": "1", "covert": "yes"},
        {**doc["entries"][0], "entry_id": "B4", "valid_until": "2026-13-01"},
        {**doc["entries"][0], "entry_id": "B5", "colour": "red"},
        {k: v for k, v in doc["entries"][0].items() if k != "plate"},
        "AB1234",
    ]
    error = rejected(signed_raw(doc, private_key), keys)
    assert error.code == "invalid_entries"
    expected = {
        4: "priority '12' is not a whole number from 1 to 9",
        5: "plate 'A#1' has characters other than letters, digits, ? and *",
        6: "entry_id 'S1' already used on entries[0]",
        7: 'priority expected a whole number or null, got "1"; covert expected true',
        8: "valid_until '2026-13-01' is not an ISO date or date-time",
        9: "unknown field 'colour'",
        10: "missing field 'plate'",
        11: 'expected an object, got "AB1234"',
    }
    assert len(error.problems) == len(expected), error.problems
    for (index, why), problem in zip(expected.items(), error.problems, strict=True):
        assert problem.startswith(f"entries[{index}]: "), problem
        assert why in problem, problem
    assert "8 bad entries" in error.message


def test_entries_are_checked_with_the_csv_rules_and_words(hq):
    private_key, keys = hq
    csv_text = "plate,priority,valid_from,valid_until\nAB1,12,2026-02-01,2026-01-01\n"
    with pytest.raises(WatchlistError) as info:
        parse_csv(csv_text, "x.csv")
    csv_problem = info.value.problems[0].removeprefix("x.csv: line 2: ")
    entry = {
        "plate": "AB1",
        "list": None,
        "priority": 12,
        "reason": None,
        "valid_from": "2026-02-01",
        "valid_until": "2026-01-01",
        "covert": None,
        "entry_id": None,
    }
    doc = {
        "schema": "lpr.watchlist/1",
        "version": 1,
        "issued_at": "2026-01-01T00:00:00.000Z",
        "vehicle_id": None,
        "entries": [entry],
    }
    error = rejected(signed_raw(doc, private_key), keys)
    assert error.problems == [f"entries[0]: {csv_problem}"]
    # Nulls read as the CSV's empty cells: the defaults.
    doc["entries"] = [{**entry, "priority": None, "valid_from": None, "valid_until": None}]
    (e,) = verify(signed_raw(doc, private_key), keys).watchlist.entries()
    assert (e.plate, e.list, e.priority, e.covert, e.entry_id) == ("AB1", "", 5, False, "1")


def test_entries_are_not_examined_before_the_signature_verifies(entries, hq, monkeypatch):
    private_key, keys = hq
    doc = good_doc(entries, private_key)
    doc["entries"].append({"plate": "A#1"})
    monkeypatch.setattr(
        "edge.watchlist.signing._parse_entries",
        lambda items: pytest.fail("entries parsed before the signature was checked"),
    )
    assert rejected(json.dumps(doc).encode(), keys).code == "bad_signature"


# --- keys --------------------------------------------------------------------------------


def test_private_key_file_is_0600_from_the_start_and_never_overwritten(tmp_path):
    private_key, public_key = generate_keypair()
    old = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        write_private_key(tmp_path / "hq.key", private_key)
        write_public_key(tmp_path / "hq.pub", public_key)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "hq.key").stat().st_mode) == 0o600
    assert (tmp_path / "hq.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "hq.pub").read_text() == public_key_base64(public_key) + "\n"
    loaded = load_private_key(tmp_path / "hq.key")
    assert key_id(loaded.public_key()) == key_id(public_key)
    with pytest.raises(FileExistsError):
        write_private_key(tmp_path / "hq.key", generate_keypair()[0])
    with pytest.raises(FileExistsError):
        write_public_key(tmp_path / "hq.pub", public_key)


def test_load_private_key_errors(tmp_path):
    with pytest.raises(PushKeyError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(PushKeyError, match="junk.key"):
        load_private_key(tmp_path / "junk.key")


def test_public_keys_from_base64_pub_and_pem_files(tmp_path):
    keys = [generate_keypair()[1] for _ in range(3)]
    (tmp_path / "keys").mkdir()
    write_public_key(tmp_path / "keys" / "b.pub", keys[1])
    pem = keys[2].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "c.pem").write_bytes(pem)
    loaded = load_public_keys(
        [public_key_base64(keys[0]), "keys/b.pub", str(tmp_path / "c.pem")], tmp_path
    )
    assert list(loaded) == [key_id(k) for k in keys]
    for kid, key in loaded.items():
        assert key_id(key) == kid
    assert load_public_keys([], tmp_path) == {}


def test_bad_public_key_values_are_each_named(tmp_path):
    private_key, _ = generate_keypair()
    write_private_key(tmp_path / "hq.key", private_key)
    (tmp_path / "junk.pub").write_text("hello\n")
    values = ["missing.pub", "hq.key", "junk.pub", base64.b64encode(b"x" * 31).decode()]
    with pytest.raises(PushKeyError) as info:
        load_public_keys(values, tmp_path)
    problems = info.value.problems
    assert len(problems) == 4
    for value, problem in zip(values, problems, strict=True):
        assert problem.startswith(f"[watchlist] public_keys: {value!r}: "), problem
    assert "private key" in problems[1]


# --- stored copy -------------------------------------------------------------------------


def test_store_keeps_one_file_per_list(entries, hq, tmp_path):
    private_key, keys = hq
    state = tmp_path / "state"
    store = PushedListStore(state)
    assert store.load(keys, "car-17") == {}  # nothing stored yet
    fleet = sign_document(entries, 7, private_key)
    own = sign_document(entries[:1], 3, private_key, vehicle_id="car-17")
    store.save("fleet", fleet)
    store.save("fleet", fleet)  # replacing is fine
    store.save("vehicle", own)
    assert (state / STORE_NAMES["fleet"]).read_bytes() == fleet
    assert (state / STORE_NAMES["vehicle"]).read_bytes() == own
    assert sorted(p.name for p in state.iterdir()) == sorted(STORE_NAMES.values())  # no temps
    for name in STORE_NAMES.values():
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    loaded = store.load(keys, "car-17")
    assert {scope: (p.version, len(p.watchlist)) for scope, p in loaded.items()} == {
        "fleet": (7, len(entries)),
        "vehicle": (3, 1),
    }


def test_store_ignores_a_corrupt_or_no_longer_trusted_copy(entries, hq, tmp_path, caplog):
    private_key, keys = hq
    store = PushedListStore(tmp_path)
    store.save("fleet", b'{"schema": "lpr.watch')
    store.save("vehicle", sign_document(entries, 3, private_key, vehicle_id="car-17"))
    with caplog.at_level(logging.WARNING, logger="edge.watchlist_push"):
        assert list(store.load(keys, "car-17")) == ["vehicle"]  # the other list still loads
    assert "malformed" in caplog.text
    store.save("fleet", sign_document(entries, 7, private_key))
    caplog.clear()
    _, other_public = generate_keypair()
    with caplog.at_level(logging.WARNING, logger="edge.watchlist_push"):
        assert store.load({key_id(other_public): other_public}, "car-17") == {}
        assert store.load({}, "car-17") == {}
    assert "unknown_key" in caplog.text and "no_keys" in caplog.text
    assert list(store.load(keys, "car-18")) == ["fleet"]  # car-17's own list is not car-18's
    # A document in the other list's file is not taken for that list.
    store.save("fleet", sign_document(entries, 8, private_key, vehicle_id="car-17"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.watchlist_push"):
        assert list(store.load(keys, "car-17")) == ["vehicle"]
    assert "holds vehicle car-17's own list, not the fleet list" in caplog.text


def test_the_single_stored_file_of_older_versions_becomes_its_lists_file(entries, hq, tmp_path):
    private_key, keys = hq
    state = tmp_path / "state"
    state.mkdir()
    own = sign_document(entries[:1], 6, private_key, vehicle_id="car-17")
    (state / SINGLE_STORE_NAME).write_bytes(own)
    loaded = PushedListStore(state).load(keys, "car-17")
    assert {scope: p.version for scope, p in loaded.items()} == {"vehicle": 6}
    assert [p.name for p in state.iterdir()] == [STORE_NAMES["vehicle"]]
    assert (state / STORE_NAMES["vehicle"]).read_bytes() == own
    # Where that list is already stored in the new form, or the old file is no
    # document, it is set aside for inspection rather than deleted or used.
    (state / SINGLE_STORE_NAME).write_bytes(
        sign_document(entries, 2, private_key, vehicle_id="car-17")
    )
    assert PushedListStore(state).load(keys, "car-17")["vehicle"].version == 6
    (state / SINGLE_STORE_NAME).write_bytes(b"not json")
    assert list(PushedListStore(state).load(keys, "car-17")) == ["vehicle"]
    names = sorted(p.name for p in state.iterdir())
    assert names[0] == STORE_NAMES["vehicle"] and len(names) == 3
    assert all(n.startswith(f"{SINGLE_STORE_NAME}.unused-") for n in names[1:])


# --- command line ------------------------------------------------------------------------


def keygen(tmp_path: Path, name: str = "hq") -> Path:
    assert cmd_watchlist_keygen(argparse.Namespace(out=str(tmp_path / name))) == 0
    return tmp_path / name


def test_cli_keygen(tmp_path, capsys):
    prefix = keygen(tmp_path)
    out = capsys.readouterr().out
    key_file, pub_file = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public_b64 = pub_file.read_text().strip()
    (kid,) = load_public_keys([public_b64], tmp_path)
    assert kid in out and f'public_keys = ["{public_b64}"]' in out
    before = key_file.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        cmd_watchlist_keygen(argparse.Namespace(out=str(prefix)))
    assert key_file.read_bytes() == before
    pub_file.unlink()  # either file existing is enough to refuse
    with pytest.raises(UsageError, match="already exists"):
        cmd_watchlist_keygen(argparse.Namespace(out=str(prefix)))
    with pytest.raises(UsageError, match="does not exist"):
        cmd_watchlist_keygen(argparse.Namespace(out=str(tmp_path / "no" / "hq")))


def sign_args(tmp_path: Path, **kwargs) -> argparse.Namespace:
    values = {
        "csv": str(tmp_path / "list.csv"),
        "key": str(tmp_path / "hq.key"),
        "version": 42,
        "vehicle": None,
        "out": str(tmp_path / "list.json"),
    }
    return argparse.Namespace(**{**values, **kwargs})


def verify_args(tmp_path: Path, **kwargs) -> argparse.Namespace:
    values = {"file": str(tmp_path / "list.json"), "config": None, "public_key": None}
    return argparse.Namespace(**{"vehicle": None, **values, **kwargs})


def test_cli_sign_and_verify(tmp_path, capsys):
    keygen(tmp_path)
    (tmp_path / "list.csv").write_text(CSV)
    config = tmp_path / "edge.toml"
    config.write_text('[vehicle]\nid = "car-17"\n\n[watchlist]\npublic_keys = ["hq.pub"]\n')
    capsys.readouterr()

    assert cmd_watchlist_sign(sign_args(tmp_path, vehicle="car-17")) == 0
    err = capsys.readouterr().err
    kid = next(iter(load_public_keys(["hq.pub"], tmp_path)))
    assert "4 entries" in err and "version 42" in err and kid in err and "car-17" in err

    assert cmd_watchlist_verify(verify_args(tmp_path, config=str(config))) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "version 42" in out and kid in out and "4 entries" in out

    # Another vehicle, or a key it does not trust, says no (exit 1).
    assert cmd_watchlist_verify(verify_args(tmp_path, config=str(config), vehicle="car-18")) == 1
    assert "wrong_vehicle" in capsys.readouterr().out
    keygen(tmp_path, "other")
    other = verify_args(tmp_path, config=str(config), public_key=[str(tmp_path / "other.pub")])
    assert cmd_watchlist_verify(other) == 1
    assert "unknown_key" in capsys.readouterr().out

    # Without a config there is no key to trust unless given.
    with pytest.raises(UsageError, match="no public keys"):
        cmd_watchlist_verify(verify_args(tmp_path))
    trusted = verify_args(tmp_path, public_key=[str(tmp_path / "hq.pub")], vehicle="car-17")
    assert cmd_watchlist_verify(trusted) == 0


def test_cli_sign_writes_the_document_0600_whatever_the_umask(tmp_path):
    # The document can hold covert entries; a shell's umask 022 made it 0644.
    keygen(tmp_path)
    (tmp_path / "list.csv").write_text(CSV)
    out = tmp_path / "list.json"
    out.write_text("an older document")
    out.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        assert cmd_watchlist_sign(sign_args(tmp_path, out=str(out))) == 0
        fresh = tmp_path / "fresh.json"
        assert cmd_watchlist_sign(sign_args(tmp_path, out=str(fresh))) == 0
    finally:
        os.umask(old_umask)
    for path in (out, fresh):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert json.loads(path.read_bytes())["version"] == 42
    with pytest.raises(UsageError, match="cannot write"):
        cmd_watchlist_sign(sign_args(tmp_path, out=str(tmp_path / "no" / "list.json")))


def test_cli_sign_to_stdout_with_default_version(tmp_path, capsysbinary, monkeypatch):
    keygen(tmp_path)
    (tmp_path / "list.csv").write_text(CSV)
    monkeypatch.setattr("edge.hq.pushtools.time.time", lambda: 1_780_000_000.5)
    capsysbinary.readouterr()
    assert cmd_watchlist_sign(sign_args(tmp_path, version=None, out="-")) == 0
    payload = capsysbinary.readouterr().out
    keys = load_public_keys(["hq.pub"], tmp_path)
    pushed = verify(payload, keys)
    assert pushed.version == 1_780_000_000 and pushed.vehicle_id is None


def test_cli_sign_errors(tmp_path):
    keygen(tmp_path)
    (tmp_path / "bad.csv").write_text("plate,priority\nAB1,x\n,1\n")
    with pytest.raises(UsageError) as info:
        cmd_watchlist_sign(sign_args(tmp_path, csv=str(tmp_path / "bad.csv")))
    assert "bad.csv: line 2" in str(info.value) and "bad.csv: line 3" in str(info.value)
    (tmp_path / "list.csv").write_text(CSV)
    with pytest.raises(UsageError, match="missing.key"):
        cmd_watchlist_sign(sign_args(tmp_path, key=str(tmp_path / "missing.key")))
    with pytest.raises(UsageError, match="--version"):
        cmd_watchlist_sign(sign_args(tmp_path, version=0))
    with pytest.raises(UsageError, match="--vehicle"):
        cmd_watchlist_sign(sign_args(tmp_path, vehicle="car 17"))
    assert not (tmp_path / "list.json").exists()


def test_cli_verify_reports_bad_entries(tmp_path, capsys):
    keygen(tmp_path)
    private_key = load_private_key(tmp_path / "hq.key")
    doc = {
        "schema": "lpr.watchlist/1",
        "version": 1,
        "issued_at": "2026-01-01T00:00:00.000Z",
        "vehicle_id": None,
        "entries": [{"plate": "AB1", "priority": 12}],
    }
    (tmp_path / "list.json").write_bytes(signed_raw(doc, private_key))
    args = verify_args(tmp_path, public_key=[str(tmp_path / "hq.pub")])
    assert cmd_watchlist_verify(args) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and "invalid_entries" in out and "entries[0]: missing field" in out
