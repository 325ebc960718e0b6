"""HQ's quick schema check (fastjsonschema, edge.hq.validate.fast_validator) only
ever says yes where jsonschema does: verdicts and reject reasons stay jsonschema's.
Checked on real messages of every schema and on many malformed ones made from them
(every key removed, every value replaced by values of other types, edge cases of
strings and numbers, unknown keys added, random combinations)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator

import pytest

from edge.hq.validate import fast_validator, schema_validator
from tests.hq.test_hq import hit_msg, status_msg
from tests.hq.test_hq_decisions import decision_of
from tests.hq.test_hq_postgres import withdrawal_of

ODD_VALUES = [
    None, True, False, 0, 1, -1, 1.0, 1.5, -0.5, 10**20, 1e300, 0.999999, 9, 10, 360.5,
    "", "x", "AB1234", "AB1234\n", "\n", "ab1234", "a" * 65, "a" * 1001, "A" * 17,
    "2026-11-23T08:00:00.000Z", "2026-11-23T08:00:00.000Z\n", "\u0085", "\u202e",
    "\ufeff", "\u200b", "x\x00", "粤Z1234港", "Z1234", "/9j/4AAQ", [], [1], {}, {"a": 1},
    "lpr.hit/1", "lpr.status/1", "online", "offline", "accept", "reject", "exact",
    "crossboundary", "0190a0a0-0000-7000-8000-000000000000",
]  # fmt: skip


def samples() -> dict[str, list[dict]]:
    hit = hit_msg()
    return {
        "hit": [
            hit,
            hit_msg(jpeg=None),
            hit_msg(covert=True, kind="fuzzy", entry_plate="AB12?4"),
        ],
        "status": [status_msg("car-7", "online"), status_msg("car-7", "offline")],
        "withdrawal": [withdrawal_of(hit)],
        "decision": [decision_of(hit), decision_of(hit, "reject", note="n", supersedes=None)],
    }


def paths(node, prefix=()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


def set_at(message: dict, path: tuple, value, *, delete: bool = False) -> dict:
    out = copy.deepcopy(message)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return out


def variants(message: dict, rng: random.Random) -> Iterator[dict]:
    all_paths = list(paths(message))
    for path in all_paths:
        if not isinstance(path[-1], int):
            yield set_at(message, path, None, delete=True)
        for value in ODD_VALUES:
            yield set_at(message, path, value)
    for path in [(), *all_paths]:
        node = message
        for key in path:
            node = node[key]
        if isinstance(node, dict):
            yield set_at(message, (*path, "unknown_key"), 1)
    for _ in range(3000):
        out = message
        for _ in range(rng.randint(2, 4)):
            out_paths = list(paths(out))
            if not out_paths:
                break
            out = set_at(out, rng.choice(out_paths), rng.choice(ODD_VALUES))
        yield out


def fast_accepts(name: str, message: dict) -> bool:
    try:
        fast_validator(name)(message)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("name", ["hit", "status", "withdrawal", "decision"])
def test_the_quick_check_accepts_only_what_jsonschema_accepts(name):
    rng = random.Random(22)
    jsonschema = schema_validator(name)
    checked = refused = 0
    for message in samples()[name]:
        # Real messages pass the quick check (otherwise it would buy nothing).
        assert fast_accepts(name, message) and jsonschema.is_valid(message)
        for variant in variants(message, rng):
            checked += 1
            if fast_accepts(name, variant):
                assert jsonschema.is_valid(variant), (name, variant)
            else:
                refused += 1
    assert checked > 1000 and refused > 100
