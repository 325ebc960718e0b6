"""The audit log: hash-chained JSON lines, tamper-evident, repaired after a torn write."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import UsageError
from edge.privacy.audit import (
    AUDIT_REPAIRED,
    GENESIS,
    SCHEMA,
    AuditLog,
    canonical,
    cmd_audit_verify,
    config_hash,
    record_hash,
    verify_chain,
    verify_records,
)


def write_log(path: Path, n: int = 5) -> list[dict]:
    with AuditLog(path, "car-7") as audit:
        return [
            audit.record("watchlist.query", plate=f"AB{i:04d}", user="pc1234") for i in range(n)
        ]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def codes(result) -> list[tuple[int, str]]:
    return [(p.line, p.code) for p in result.problems]


def test_records_chain_and_verify(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 4)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    first = records[0]
    assert first["schema"] == SCHEMA and first["vehicle_id"] == "car-7"
    assert first["action"] == "watchlist.query"
    assert first["details"] == {"plate": "AB0000", "user": "pc1234"}
    assert first["at"].endswith("Z") and len(first["event_id"]) == 36
    # Each line is the record's canonical JSON, and hash covers the rest of it.
    assert lines(path)[0] == canonical(first) + b"\n"
    assert first["hash"] == record_hash(first)
    result = verify_chain(path)
    assert result.ok and result.records == 4 and result.problems == []
    assert (result.last_seq, result.last_hash) == (4, records[-1]["hash"])


def test_an_edited_character_names_its_line(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    content = lines(path)
    assert b"AB0002" in content[2]
    content[2] = content[2].replace(b"AB0002", b"AB0003")
    path.write_bytes(b"".join(content))
    result = verify_chain(path)
    assert not result.ok
    assert codes(result) == [(3, "hash_mismatch")]
    assert str(result.problems[0]).startswith("line 3: ")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    content = lines(path)
    record = json.loads(content[1])
    record["details"]["plate"] = "ZZ9999"
    record["hash"] = record_hash(record)
    content[1] = canonical(record) + b"\n"
    path.write_bytes(b"".join(content))
    assert codes(verify_chain(path)) == [(3, "prev_mismatch")]


def test_a_changed_space_is_detected(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    content = lines(path)
    content[1] = content[1].replace(b'"seq":2', b'"seq": 2')
    path.write_bytes(b"".join(content))
    assert codes(verify_chain(path)) == [(2, "not_canonical")]


def test_a_deleted_line_is_a_prev_mismatch_and_seq_gap(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    content = lines(path)
    del content[2]
    path.write_bytes(b"".join(content))
    assert codes(verify_chain(path)) == [(3, "prev_mismatch"), (3, "seq_gap")]


def test_deleting_the_first_line_is_detected(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(b"".join(lines(path)[1:]))
    result = verify_chain(path)
    assert (1, "prev_mismatch") in codes(result) and (1, "seq_gap") in codes(result)


def test_reordered_lines_are_detected(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    content = lines(path)
    content[1], content[2] = content[2], content[1]
    path.write_bytes(b"".join(content))
    result = verify_chain(path)
    assert not result.ok
    assert {line for line, code in codes(result) if code == "prev_mismatch"} >= {2, 3}


def test_a_forged_appended_line_is_detected(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 3)
    forged = {**records[-1], "seq": 4, "action": "purge", "details": {"hits": 0}}
    forged["prev"] = "f" * 64  # not the last record's hash
    forged["hash"] = record_hash(forged)
    with path.open("ab") as fh:
        fh.write(canonical(forged) + b"\n")
    assert codes(verify_chain(path)) == [(4, "prev_mismatch")]


def test_garbage_and_wrong_schema_lines_are_reported(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    with path.open("ab") as fh:
        fh.write(b"not json\n")
        fh.write(b'{"schema": "other/1"}\n')
    assert codes(verify_chain(path)) == [(3, "bad_json"), (4, "schema")]


def test_reopening_continues_the_chain(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 3)
    with AuditLog(path, "car-7") as audit:
        assert (audit.seq, audit.last_hash) == (3, first[-1]["hash"])
        record = audit.record("service.start", config_hash="x" * 64)
        assert audit.repaired is None
    assert record["seq"] == 4 and record["prev"] == first[-1]["hash"]
    assert verify_chain(path).ok and verify_chain(path).records == 4


def test_reopening_reads_only_the_tail_of_a_long_log(tmp_path: Path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    with path.open("rb") as fh:
        tail = fh.read()
    # A long log: prepend 2 MB of (unchecked) earlier lines; open must not read them.
    path.write_bytes(b"x" * 2_000_000 + b"\n" + tail)
    reads = []
    real_pread = os.pread

    def counting_pread(fd, n, offset):
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    with AuditLog(path, "car-7") as audit:
        assert audit.seq == 3
    assert sum(reads) < 200_000


def test_a_torn_last_line_is_kept_aside_and_recorded(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 3)
    intact = path.read_bytes()
    torn = b'{"action":"purge","at":"2026-11-2'
    path.write_bytes(intact + torn)
    seen = []
    with AuditLog(path, "car-7", sink=lambda r, p: seen.append(r)) as audit:
        repaired = audit.repaired
        assert repaired is not None and repaired["action"] == AUDIT_REPAIRED
        assert repaired["seq"] == 4 and repaired["prev"] == records[-1]["hash"]
        assert repaired["details"]["torn_bytes"] == len(torn)
        audit.record("service.start")
    assert seen[0] == repaired
    side = tmp_path / repaired["details"]["torn_file"]
    assert side.name.startswith("audit.torn-")
    assert side.read_bytes() == torn
    assert stat.S_IMODE(side.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(intact)
    result = verify_chain(path)
    assert result.ok and result.records == 5


def test_verify_reports_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    with path.open("ab") as fh:
        fh.write(b'{"acti')
    assert codes(verify_chain(path)) == [(3, "torn")]


def test_an_unreadable_last_line_is_left_and_the_chain_continues_past_it(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 2)
    with path.open("ab") as fh:
        fh.write(b"garbage\n")
    with AuditLog(path, "car-7") as audit:
        repaired = audit.repaired
        assert repaired["details"]["unreadable_lines"] == 1
        assert repaired["seq"] == 3 and repaired["prev"] == records[-1]["hash"]
    assert b"garbage\n" in path.read_bytes()
    assert codes(verify_chain(path)) == [(3, "bad_json")]


def test_concurrent_records_keep_a_valid_chain(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "car-7") as audit:

        def work(t: int) -> None:
            for i in range(20):
                audit.record("watchlist.query", thread=t, i=i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = verify_chain(path)
    assert result.ok and result.records == 120 and result.last_seq == 120


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path):
    # The service and a `watchlist check` run by hand append to the same log.
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "car-7") as service, AuditLog(path, "car-7") as cli:
        service.record("service.start")
        cli.record("watchlist.query", plate="AB1234")
        service.record("purge", hits=2)
        cli.record("watchlist.query", plate="CD5678")
    result = verify_chain(path)
    assert result.ok and result.last_seq == 4


def test_sink_gets_each_record_and_its_payload_in_order(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    seen: list[tuple[dict, bytes]] = []
    with AuditLog(path, "car-7", sink=lambda r, p: seen.append((r, p))) as audit:
        returned = [audit.record("service.start"), audit.record("service.stop", reason="sigterm")]
    assert [r for r, _ in seen] == returned
    assert [p + b"\n" for _, p in seen] == lines(path)
    assert verify_records(json.loads(p) for _, p in seen).ok


def test_a_failing_sink_does_not_lose_the_record(tmp_path: Path):
    path = tmp_path / "audit.jsonl"

    def sink(record, payload):
        raise RuntimeError("outbox down")

    with AuditLog(path, "car-7", sink=sink) as audit:
        audit.record("service.start")
        assert audit.sink_errors == 1
    assert verify_chain(path).records == 1


def test_bad_details_write_nothing(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "car-7") as audit:
        with pytest.raises(TypeError):
            audit.record("purge", when=object())
        with pytest.raises(ValueError):
            audit.record("purge", ratio=float("nan"))
        with pytest.raises(ValueError):
            audit.record("Not An Action")
        assert audit.record("purge", hits=1)["seq"] == 1
    assert verify_chain(path).ok


def test_the_file_is_private(tmp_path: Path):
    path = tmp_path / "state" / "audit.jsonl"
    write_log(path, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    write_log(path, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_verify_records_for_hq(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 5)
    assert verify_records(records).ok
    # Continuing from an already checked part.
    tail = verify_records(records[3:], start_seq=4, start_prev=records[2]["hash"])
    assert tail.ok and tail.last_seq == 5
    assert not verify_records(records[3:]).ok
    assert verify_records(records[3:], start_seq=None, start_prev=None).ok
    missing = records[:2] + records[3:]
    assert codes(verify_records(missing)) == [(3, "prev_mismatch"), (3, "seq_gap")]
    edited = [dict(r) for r in records]
    edited[1]["details"] = {"plate": "XX0000"}
    assert codes(verify_records(edited)) == [(2, "hash_mismatch")]


def test_config_hash_is_stable_and_ignores_the_password_value(tmp_path: Path):
    config_file = tmp_path / "lpr.toml"
    config_file.write_text('[vehicle]\nid = "car-7"\n[mqtt]\nhost = "broker"\n')
    base = config_hash(load_config(config_file, environ={}))
    assert base == config_hash(load_config(config_file, environ={}))
    assert len(base) == 64
    one = config_hash(load_config(config_file, environ={"LPR_EDGE_MQTT_PASSWORD": "secret-1"}))
    two = config_hash(load_config(config_file, environ={"LPR_EDGE_MQTT_PASSWORD": "secret-2"}))
    assert one == two
    config_file.write_text('[vehicle]\nid = "car-8"\n[mqtt]\nhost = "broker"\n')
    assert config_hash(load_config(config_file, environ={})) != base


def test_cmd_audit_verify_exit_codes(tmp_path: Path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    assert cmd_audit_verify(argparse.Namespace(file=str(path), config=None)) == 0
    assert "3 records, chain intact" in capsys.readouterr().out
    content = lines(path)
    content[1] = content[1].replace(b"AB0001", b"AB0009")
    path.write_bytes(b"".join(content))
    assert cmd_audit_verify(argparse.Namespace(file=str(path), config=None)) == 1
    out = capsys.readouterr().out.splitlines()
    assert "BROKEN" in out[0] and out[1].strip().startswith("line 2: hash does not match")
    with pytest.raises(UsageError):
        cmd_audit_verify(argparse.Namespace(file=str(tmp_path / "none.jsonl"), config=None))


def test_cmd_audit_verify_finds_the_log_from_the_config(tmp_path: Path, capsys):
    config_file = tmp_path / "lpr.toml"
    config_file.write_text('[storage]\nstate_dir = "state"\n')
    args = argparse.Namespace(config=str(config_file))
    with pytest.raises(UsageError):
        cmd_audit_verify(args)
    write_log(tmp_path / "state" / "audit.jsonl", 2)
    assert cmd_audit_verify(args) == 0
    assert str(tmp_path / "state" / "audit.jsonl") in capsys.readouterr().out


def test_a_write_cut_short_by_a_full_disk_leaves_whole_records_only(tmp_path: Path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "car-7") as audit:
        audit.record("service.start")
        real_write = os.write
        calls = []

        def full_disk(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data)[:10])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full_disk)
        with pytest.raises(OSError):
            audit.record("purge", hits=3)
        monkeypatch.setattr(os, "write", real_write)
        assert audit.record("purge", hits=3)["seq"] == 2
    result = verify_chain(path)
    assert result.ok and result.records == 2
