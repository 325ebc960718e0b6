from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.bench.watchlist import random_plate
from edge.platetext import ALPHABET, distance
from edge.watchlist.csvfile import MAX_FIELD_LENGTH, load_watchlist, parse_csv, read_csv
from edge.watchlist.lists import Watchlist, WatchlistEntry, WatchlistError
from tests.test_cli import lpr_edge

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HEADER = "plate,list,priority,reason,valid_from,valid_until,covert,entry_id\n"


def wl(*rows: str, header: str = HEADER) -> Watchlist:
    return Watchlist(parse_csv(header + "".join(r + "\n" for r in rows), "t.csv"))


def ids(matches) -> list[str]:
    return [m.entry.entry_id for m in matches]


# --- parsing -----------------------------------------------------------------------


def test_parse_fields_defaults_and_normalisation():
    entries = parse_csv(
        "plate,list,reason,covert,priority\n"
        "ab-12 34,stolen-vehicle,taken 2026-05-01,yes,1\n"
        "\n"
        "XY?9*,wanted-person,,,\n"
    )
    a, b = entries
    assert a == WatchlistEntry(
        "AB1234", "stolen-vehicle", 1, "taken 2026-05-01", None, None, True, "2", 2
    )
    assert b.plate == "XY?9*" and b.is_wildcard
    assert (b.priority, b.covert, b.entry_id, b.line) == (5, False, "4", 4)


def test_dates_naive_is_utc_and_date_only_until_is_inclusive():
    (e,) = parse_csv("plate,valid_from,valid_until\nAB1,2026-01-01T08:00,2026-01-31\n")
    assert e.valid_from == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert e.valid_until is not None and e.valid_until.date().isoformat() == "2026-01-31"
    assert e.valid_at(datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert not e.valid_at(datetime(2026, 2, 1, tzinfo=UTC))
    (e,) = parse_csv("plate,valid_from\nAB1,2026-01-01T08:00+08:00\n")
    assert e.valid_from == datetime(2026, 1, 1, 0, tzinfo=UTC)


def test_every_bad_line_is_reported_with_its_number_and_nothing_is_loaded():
    text = (
        HEADER
        + "AB1,,1,,,,,\n"  # line 2: fine
        + ",stolen-vehicle,1,,,,,\n"  # 3
        + "AB2,,0,,,,,\n"  # 4
        + "AB3,,high,,,,,\n"  # 5
        + "AB4,,,,2026-13-01,,,\n"  # 6
        + "AB5,,,,2026-02-01,2026-01-01,,\n"  # 7
        + "AB6,,,,,,maybe,\n"  # 8
        + "AB7,,,,,,,X1\n"  # 9
        + "AB8,,,,,,,X1\n"  # 10
        + "AB9,,,,,,,,extra\n"  # 11
        + "A#9,,,,,,,\n"  # 12
        + "??*,,,,,,,\n"  # 13
    )
    with pytest.raises(WatchlistError) as info:
        parse_csv(text, "list.csv")
    problems = info.value.problems
    expected = {
        3: "missing plate",
        4: "priority '0'",
        5: "priority 'high'",
        6: "valid_from '2026-13-01'",
        7: "is after valid_until",
        8: "covert 'maybe'",
        10: "entry_id 'X1' already used on line 9",
        11: "9 fields, the header has 8",
        12: "characters other than",
        13: "no letter or digit",
    }
    assert len(problems) == len(expected), problems
    for (line, why), problem in zip(expected.items(), problems, strict=True):
        assert problem.startswith(f"list.csv: line {line}: "), problem
        assert why in problem, problem


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("plate,colour\nAB1,red\n", "unknown column 'colour'"),
        ("list,reason\nx,y\n", "no 'plate' column"),
        ("plate,plate\nA,B\n", "column 'plate' appears twice"),
    ],
)
def test_bad_header_or_empty_file(text, why):
    with pytest.raises(WatchlistError) as info:
        parse_csv(text, "w.csv")
    assert why in str(info.value) and str(info.value).startswith("w.csv")


def test_file_errors_are_watchlist_errors(tmp_path):
    with pytest.raises(WatchlistError, match="file not found"):
        read_csv(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"plate,reason\nAB1,caf\xe9\n")
    with pytest.raises(WatchlistError, match="not UTF-8"):
        read_csv(bad)


def test_watchlist_is_immutable_and_counts_entries(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("plate\nAB1\nAB1\nC?3\n")
    w = load_watchlist(path, version=7)
    assert (len(w), w.version, w.source) == (3, 7, str(path))
    assert w.loaded_at.tzinfo is not None
    with pytest.raises(AttributeError):
        w.version = 8


# --- matching ----------------------------------------------------------------------


def test_distance_prices_lookalikes_at_half():
    assert distance("AB1234", "AB1234") == 0
    assert distance("AB1234", "A81234") == 0.5  # 8/B
    assert distance("AB1234", "AB1Z34") == 0.5  # 2/Z
    assert distance("AB1234", "AB1734") == 1
    assert distance("AB1234", "AB123") == 1
    assert distance("AB1234", "AB12345") == 1
    assert distance("0D1", "QOI") == 1.5


def test_exact_fuzzy_and_lookalike_matches():
    w = wl("AB1234,,,,,,,")
    m = w.match("ab 1234", at=AT)
    assert m is not None and (m.kind, m.distance, m.text) == ("exact", 0.0, "AB1234")
    m = w.match("A81234", at=AT)
    assert m is not None and (m.kind, m.distance) == ("fuzzy", 0.5)
    m = w.match("A8I234", at=AT)  # two look-alikes: 1.0, still within 1
    assert m is not None and m.distance == 1.0
    assert w.match("AB1734", at=AT).distance == 1.0
    assert w.match("AB134", at=AT).distance == 1.0
    assert w.match("XAB1234", at=AT).distance == 1.0
    assert w.match("A81Z34", at=AT, max_distance=1).distance == 1.0
    assert w.match("A8IZ34", at=AT) is None  # 1.5
    assert w.match("A8IZ34", at=AT, max_distance=2).distance == 1.5
    assert w.match("AB1779", at=AT) is None
    assert w.match("A81234", at=AT, max_distance=0) is None


def test_wildcards():
    w = wl("AB?234,,,,,,,q", "XY*9,,,,,,,s")
    assert w.match("AB7234", at=AT).kind == "wildcard"
    assert w.match("AB234", at=AT) is None  # ? is exactly one character
    assert w.match("AB77234", at=AT) is None
    for read in ("XY9", "XYZ9", "XY12349"):
        m = w.match(read, at=AT, max_distance=0)
        assert m is not None and (m.kind, m.entry.entry_id, m.distance) == ("wildcard", "s", 0)
    assert w.match("XY8", at=AT, max_distance=0) is None


def test_candidates_are_tried_and_reported_as_such():
    w = wl("PK5678,,,,,,,")
    m = w.match("RK9999", at=AT, candidates=["RK9999", "PK 5678"])
    assert m is not None and m.via_candidate and m.kind == "exact" and m.text == "PK5678"
    # The read itself beats a candidate for the same entry.
    m = w.match("PK5678", at=AT, candidates=["PK5679"])
    assert m is not None and not m.via_candidate


def test_validity_windows():
    w = wl(
        "AA1,,,,2026-07-01,,,future",
        "AA1,,,,,2026-05-31,,expired",
        "AA1,,,,,2026-06-01,,today",
        "AA1,,,,2026-06-01T12:00:01,,,a-second-late",
    )
    assert ids(w.explain("AA1", AT)) == ["today"]
    assert ids(w.explain("AA1", datetime(2026, 6, 1, 23, 59, 59))) == ["a-second-late", "today"]
    assert ids(w.explain("AA1", AT + timedelta(days=1))) == ["a-second-late"]


def test_order_is_priority_then_distance_then_kind_then_id():
    w = wl(
        "AB1234,,5,,,,,e5",
        "AB1235,,1,,,,,f1",
        "AB12?4,,5,,,,,w5",
        "A81234,,5,,,,,f5",
        "AB1234,,5,,,,,10",
        "AB1234,,5,,,,,9",
    )
    found = w.explain("AB1234", AT)
    assert ids(found) == ["f1", "9", "10", "e5", "w5", "f5"]
    assert [m.kind for m in found] == ["fuzzy", "exact", "exact", "exact", "wildcard", "fuzzy"]
    assert w.match("AB1234", at=AT).entry.entry_id == "f1"


def test_covert_flag_and_fields_are_carried():
    w = wl("CV123,wanted-person,2,armed,,,true,c1")
    m = w.match("CV123", at=AT)
    assert m is not None
    e = m.entry
    assert (e.covert, e.list, e.priority, e.reason) == (True, "wanted-person", 2, "armed")


# --- scale: the index against a brute-force reference --------------------------------

_GROUPS = ("0ODQ", "1IL", "2Z", "5S", "6G", "8B")


def _cost_table() -> np.ndarray:
    n = len(ALPHABET)
    table = np.ones((n, n), np.float32)
    for group in _GROUPS:
        for a in group:
            for b in group:
                table[ALPHABET.index(a), ALPHABET.index(b)] = 0.5
    np.fill_diagonal(table, 0.0)
    return table


def _reference(entries, at, max_distance):
    """A full-scan matcher: query -> every matching (entry_id, kind, distance), with
    weighted Levenshtein computed for all plain entries at once per plate length."""
    table = _cost_table()
    by_len: dict[int, list[WatchlistEntry]] = {}
    for e in entries:
        if not e.is_wildcard and e.valid_at(at):
            by_len.setdefault(len(e.plate), []).append(e)
    groups = [
        (n, group, np.array([[ALPHABET.index(c) for c in e.plate] for e in group]))
        for n, group in by_len.items()
    ]
    wildcards = [
        (re.compile("".join("." if c == "?" else ".*" if c == "*" else c for c in e.plate)), e)
        for e in entries
        if e.is_wildcard and e.valid_at(at)
    ]
    rank = {"exact": 0, "wildcard": 1, "fuzzy": 2}

    def search(query: str) -> set[tuple[str, str, float]]:
        out = []
        for length, group, codes in groups:
            if abs(length - len(query)) > max_distance:
                continue
            prev = np.tile(np.arange(length + 1, dtype=np.float32), (len(group), 1))
            for i, qc in enumerate(ALPHABET.index(c) for c in query):
                cur = np.empty_like(prev)
                cur[:, 0] = i + 1
                cost = table[qc][codes]
                for j in range(1, length + 1):
                    cur[:, j] = np.minimum(
                        np.minimum(prev[:, j], cur[:, j - 1]) + 1, prev[:, j - 1] + cost[:, j - 1]
                    )
                prev = cur
            dist = prev[:, length]
            for k in np.nonzero(dist <= max_distance + 1e-6)[0]:
                d = float(dist[k])
                out.append((group[k].entry_id, "exact" if d == 0 else "fuzzy", d))
        out += [(e.entry_id, "wildcard", 0.0) for rx, e in wildcards if rx.fullmatch(query)]
        # The index reports one match per entry, its best; so must the reference.
        best: dict[str, tuple[str, str, float]] = {}
        for item in out:
            old = best.get(item[0])
            if old is None or (item[2], rank[item[1]]) < (old[2], rank[old[1]]):
                best[item[0]] = item
        return set(best.values())

    return search


def _mutate(plate: str, rng: random.Random) -> str:
    lookalike = {c: g.replace(c, "") for g in _GROUPS for c in g}
    kind = rng.randrange(6)
    i = rng.randrange(len(plate))
    if kind == 0:
        return plate
    if kind == 1 and plate[i] in lookalike:
        return plate[:i] + rng.choice(lookalike[plate[i]]) + plate[i + 1 :]
    if kind == 2:
        return plate[:i] + rng.choice(ALPHABET) + plate[i + 1 :]
    if kind == 3:
        return plate[:i] + plate[i + 1 :] or plate
    if kind == 4:
        return plate[:i] + rng.choice(ALPHABET) + plate[i:]
    return _mutate(_mutate(plate, rng), rng)


def test_index_agrees_with_brute_force_on_50000_entries():
    rng = random.Random(42)
    lines = [HEADER.strip()]
    plates = []
    for n in range(50_000):
        plate = random_plate(rng) if n % 100 else (plates[-1] if plates else "AB1")
        if n % 500 == 7:
            k = rng.randrange(len(plate))
            plate = plate[:k] + rng.choice("?*") + plate[k + 1 :]
        plates.append(plate)
        until = "2026-05-01" if n % 10 == 3 else ""
        lines.append(f"{plate},stolen-vehicle,{1 + n % 9},,,{until},,E{n}")
    entries = parse_csv("\n".join(lines) + "\n")
    w = Watchlist(entries)
    queries = [
        _mutate(rng.choice(plates).replace("?", "A").replace("*", ""), rng) for _ in range(170)
    ]
    queries += ["".join(rng.choices(ALPHABET, k=rng.randint(2, 8))) for _ in range(30)]
    reference = _reference(entries, AT, 1)
    matched = 0
    for q in queries:
        found = w.explain(q, AT, max_distance=1)
        got = {(m.entry.entry_id, m.kind, m.distance) for m in found}
        assert got == reference(q), q
        assert [m.sort_key() for m in found] == sorted(m.sort_key() for m in found)
        matched += bool(found)
    assert matched > 100  # the queries exercise hits, not only misses


# --- quoting: one entry per line ------------------------------------------------------


def test_a_stray_quote_is_an_error_naming_its_line_and_every_later_line_is_still_read():
    # Quoted, "reason" ran on to the end of the file and 4 entries loaded as 1.
    text = (
        "plate,priority,reason\n"
        "AB1,1,stolen\n"
        'CD2,1,"wanted for robbery\n'  # line 3: the quote is never closed
        "EF3,1,stolen\n"
        "GH4,12,stolen\n"  # line 5: still checked
        'JK5,1,"disqualified driver\n'  # line 6: the last line, unclosed too
    )
    with pytest.raises(WatchlistError) as info:
        parse_csv(text, "list.csv")
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("list.csv: line 3: a quoted field is not closed on its line")
    assert "priority '12'" in problems[1] and problems[1].startswith("list.csv: line 5: ")
    assert problems[2].startswith("list.csv: line 6: a quoted field is not closed on its line")


def test_a_quote_closed_on_a_later_line_is_refused_too():
    # Well-formed CSV, but a watchlist holds one entry per line: an entry that spans
    # lines is a mistake, not a reason with a line break.
    text = 'plate,reason\nAB1,"stolen\nresprayed"\nCD2,wanted\n'
    with pytest.raises(WatchlistError) as info:
        parse_csv(text, "list.csv")
    assert len(info.value.problems) == 2, info.value.problems  # and its tail on line 3
    assert info.value.problems[0].startswith("list.csv: line 2: a quoted field is not closed")


def test_a_quoted_reason_with_a_comma_or_a_doubled_quote_loads():
    entries = parse_csv(
        'plate,reason,list\nAB1,"stolen, then resprayed",stolen-vehicle\n'
        'CD2,"known as ""the driver""",wanted-person\n'
    )
    assert [(e.plate, e.reason, e.list, e.line) for e in entries] == [
        ("AB1", "stolen, then resprayed", "stolen-vehicle", 2),
        ("CD2", 'known as "the driver"', "wanted-person", 3),
    ]


def test_text_after_a_closing_quote_is_an_error_naming_the_line():
    with pytest.raises(WatchlistError) as info:
        parse_csv('plate,reason\nAB1,"stolen" twice\n', "list.csv")
    (problem,) = info.value.problems
    assert problem.startswith("list.csv: line 2: ") and "quote" in problem


def test_a_field_longer_than_the_limit_is_an_error_naming_line_and_column():
    ok = "x" * MAX_FIELD_LENGTH
    assert parse_csv(f"plate,reason\nAB1,{ok}\n")[0].reason == ok
    with pytest.raises(WatchlistError) as info:
        parse_csv(f"plate,reason\nAB1,{ok}\nCD2,{ok}y\n", "list.csv")
    assert info.value.problems == [
        f"list.csv: line 3: reason is {MAX_FIELD_LENGTH + 1} characters long, "
        f"more than the {MAX_FIELD_LENGTH} allowed in a field"
    ]
    # Past the csv module's own limit (131072) too, the same rule in other words.
    with pytest.raises(WatchlistError) as info:
        parse_csv(f"plate,reason\nAB1,{'x' * 200_000}\n", "list.csv")
    assert info.value.problems == [
        f"list.csv: line 2: a field is more than the {MAX_FIELD_LENGTH} characters allowed"
    ]


def test_cli_check_refuses_a_file_with_a_stray_quote(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(
        'plate,reason\nAB1,stolen\nCD2,"wanted\nEF3,stolen\nGH4,stolen\n', encoding="utf-8"
    )
    result = lpr_edge("watchlist", "check", "GH4", "--watchlist", str(path))
    assert result.returncode == 2, result.stdout
    assert f"{path}: line 3: a quoted field is not closed on its line" in result.stderr


# --- command line --------------------------------------------------------------------


def test_cli_check_exit_codes(tmp_path):
    good = tmp_path / "list.csv"
    good.write_text(HEADER + "AB1234,stolen-vehicle,1,taken,,,true,S1\n")
    hit = lpr_edge("watchlist", "check", "A8 1234", "--watchlist", str(good))
    assert hit.returncode == 0, hit.stderr
    assert "S1" in hit.stdout and "fuzzy" in hit.stdout and "covert=true" in hit.stdout
    miss = lpr_edge("watchlist", "check", "ZZ9", "--watchlist", str(good))
    assert miss.returncode == 1 and "no match" in miss.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("plate,priority\nAB1,x\n,1\n")
    result = lpr_edge("watchlist", "check", "AB1", "--watchlist", str(bad))
    assert result.returncode == 2
    assert f"{bad}: line 2" in result.stderr and f"{bad}: line 3" in result.stderr
    assert "Traceback" not in result.stderr
    expired = lpr_edge(
        "watchlist", "check", "AB1234", "--watchlist", str(good), "--at", "not-a-date"
    )
    assert expired.returncode == 2 and "--at" in expired.stderr
    assert lpr_edge("watchlist", "check", "AB1234").returncode == 2  # no list configured


def test_cli_check_uses_the_configured_list(tmp_path):
    (tmp_path / "list.csv").write_text("plate,valid_until\nAB1234,2026-01-31\n")
    config = tmp_path / "edge.toml"
    config.write_text('[watchlist]\npath = "list.csv"\n')
    result = lpr_edge(
        "watchlist", "check", "AB1234", "--config", str(config), "--at", "2026-01-31T23:00"
    )
    assert result.returncode == 0, result.stderr
    late = lpr_edge("watchlist", "check", "AB1234", "--config", str(config), "--at", "2026-02-01")
    assert late.returncode == 1


def test_a_cross_boundary_plate_is_listed_as_issued_and_matched_by_its_core():
    entries = parse_csv("plate,list\n粤Z1234港,stolen\n粤Z·AB12澳,stolen\nZ 9876 港,stolen\n")
    assert [e.plate for e in entries] == ["Z1234", "ZAB12", "Z9876"]
    # The marks anywhere else are a typing error, reported with the line.
    for bad in ("AB港1234", "粤AB1234", "港", "粤Z12345港"):
        with pytest.raises(WatchlistError) as info:
            parse_csv(f"plate,list\n{bad},stolen\n", "list.csv")
        assert "line 2" in str(info.value) and "粤Z1234港" in str(info.value)


def test_names_and_texts_hq_would_refuse_are_refused_when_the_list_loads():
    """Every hit carries the entry's list, reason and id: what HQ's schema refuses
    (a list name that is not an identifier, control or invisible characters) is an
    error naming the line, not a hit that HQ later rejects."""
    text = (
        "plate,list,reason,entry_id\n"
        "AB1234,stolen vehicle,,a\n"
        'CD5678,stolen-vehicle,"reason \x1b]0;owned\x07",b\n'
        "EF9012,stolen-vehicle,盗窃 stolen,c\u202e\n"
        "GH3456,wanted-person,盗窃 stolen,d\n"
    )
    with pytest.raises(WatchlistError) as caught:
        parse_csv(text)
    problems = str(caught.value)
    assert "line 2: list 'stolen vehicle' is not a list name" in problems
    assert "line 3: reason holds the control or invisible character \\x1b" in problems
    assert "line 4: entry_id holds the control or invisible character \\u202e" in problems
    assert "line 5" not in problems  # Chinese text is free text
