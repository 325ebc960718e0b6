"""`lpr-edge bench watchlist`: how fast a large watchlist loads and matches.

Generates N distinct random Hong Kong-style plates (standard marks of 1-2 letters and
1-4 digits, plus personalised marks of up to 8 letters and digits) with a fixed seed,
and about 0.1% wildcard entries, writes them as a CSV to a temporary folder and
measures: CSV parse time, index build time, resident memory after loading, and the
time to match one read (median and p99) for exact hits, fuzzy hits (one look-alike
and one plain substitution), misses and wildcard hits.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import UsageError
from edge.platetext import ALPHABET
from edge.synth.scenes import HK_LETTERS
from edge.watchlist.csvfile import read_csv
from edge.watchlist.lists import Watchlist

_DIGITS = "0123456789"
_LISTS = ("stolen-vehicle", "wanted-person", "missing-person")
_LOOKALIKE_PAIRS = {
    "0": "O",
    "O": "0",
    "1": "I",
    "I": "1",
    "2": "Z",
    "Z": "2",
    "5": "S",
    "S": "5",
    "6": "G",
    "G": "6",
    "8": "B",
    "B": "8",
}


def random_plate(rng: random.Random) -> str:
    """An HK-style mark: mostly standard (1-2 letters + 1-4 digits), some personalised."""
    if rng.random() < 0.9:
        letters = "".join(rng.choices(HK_LETTERS, k=rng.choice((1, 2, 2, 2))))
        n = rng.choice((1, 2, 3, 4, 4, 4))
        return letters + str(rng.randrange(10 ** (n - 1), 10**n))
    # Personalised marks: up to 8 letters and digits, no I/O/Q.
    return "".join(rng.choices(HK_LETTERS + _DIGITS, k=rng.randint(2, 8)))


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_csv(path: Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Write ``n`` entries; return the plain plates and the wildcard patterns."""
    rng = random.Random(seed)
    plates: list[str] = []
    patterns: list[str] = []
    # Real lists name each plate about once; random draws repeat the short marks
    # hundreds of times, which would time duplicate bookkeeping instead of lookups.
    seen: set[str] = set()
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("plate,list,priority,reason,valid_from,valid_until,covert,entry_id\n")
        for i in range(n):
            if i % 1000 == 999:
                base = random_plate(rng)
                k = rng.randrange(len(base))
                plate = base[:k] + ("?" if rng.random() < 0.5 else "*") + base[k + 1 :]
                patterns.append(plate)
            else:
                plate = random_plate(rng)
                while plate in seen:
                    plate = random_plate(rng)
                seen.add(plate)
                plates.append(plate)
            lst = _LISTS[i % 3]
            until = "2030-12-31" if i % 7 else ""
            covert = "true" if i % 50 == 0 else "false"
            fh.write(f"{plate},{lst},{1 + i % 9},{lst} case,,{until},{covert},W{i}\n")
    return plates, patterns


def _time_reads(wl: Watchlist, reads: list[str], at: datetime) -> dict:
    times, hits = [], 0
    for text in reads:
        t0 = time.perf_counter()
        m = wl.match(text, at=at, max_distance=1)
        times.append((time.perf_counter() - t0) * 1000)
        hits += m is not None
    times.sort()
    return {
        "reads": len(reads),
        "hit_rate": hits / len(reads) if reads else 0.0,
        "median_ms": statistics.median(times) if times else 0.0,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0,
    }


def _wildcard_read(pattern: str, rng: random.Random) -> str:
    return "".join(
        rng.choice(ALPHABET)
        if c == "?"
        else "".join(rng.choices(ALPHABET, k=rng.randint(0, 2)))
        if c == "*"
        else c
        for c in pattern
    )


def run(n: int, n_reads: int, seed: int) -> dict:
    rng = random.Random(seed + 1)
    with tempfile.TemporaryDirectory(prefix="lpr-bench-watchlist-") as tmp:
        path = Path(tmp) / "watchlist.csv"
        t0 = time.perf_counter()
        plates, patterns = write_csv(path, n, seed)
        write_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        gc.collect()
        rss_before = rss_mb()
        t0 = time.perf_counter()
        entries = read_csv(path)
        parse_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        wl = Watchlist(entries, source=str(path))
        build_s = time.perf_counter() - t0
        del entries
    gc.collect()
    rss_after = rss_mb()
    at = datetime(2026, 6, 1, tzinfo=UTC)
    known = set(plates)

    exact = [rng.choice(plates) for _ in range(n_reads)]
    lookalike, plain = [], []
    while len(lookalike) < n_reads:
        p = rng.choice(plates)
        slots = [i for i, c in enumerate(p) if c in _LOOKALIKE_PAIRS]
        if slots:
            i = rng.choice(slots)
            lookalike.append(p[:i] + _LOOKALIKE_PAIRS[p[i]] + p[i + 1 :])
    while len(plain) < n_reads:
        p = rng.choice(plates)
        i = rng.randrange(len(p))
        c = rng.choice([c for c in ALPHABET if c != p[i] and _LOOKALIKE_PAIRS.get(p[i]) != c])
        plain.append(p[:i] + c + p[i + 1 :])
    misses: list[str] = []
    while len(misses) < n_reads:
        p = "".join(rng.choices("IOQ", k=1)) + "".join(rng.choices(ALPHABET, k=6))
        if p not in known:
            misses.append(p)
    wild = [_wildcard_read(rng.choice(patterns), rng) for _ in range(n_reads)] if patterns else []

    report = {
        "entries": n,
        "wildcard_entries": len(patterns),
        "csv_mb": round(size_mb, 1),
        "generate_s": round(write_s, 2),
        "load_s": round(parse_s, 2),
        "index_s": round(build_s, 2),
        "load_total_s": round(parse_s + build_s, 2),
        "rss_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "match": {
            "exact": _time_reads(wl, exact, at),
            "fuzzy_lookalike": _time_reads(wl, lookalike, at),
            "fuzzy_plain": _time_reads(wl, plain, at),
            "miss": _time_reads(wl, misses, at),
            "wildcard": _time_reads(wl, wild, at),
        },
    }
    return report


def format_report(r: dict) -> str:
    lines = [
        f"entries: {r['entries']} ({r['wildcard_entries']} wildcard), CSV {r['csv_mb']} MB",
        f"load: parse {r['load_s']:.2f} s + index {r['index_s']:.2f} s = {r['load_total_s']:.2f} s",
        f"memory: RSS {r['rss_mb']:.0f} MB after load ({r['rss_growth_mb']:+.0f} MB for the list)",
        f"{'read kind':<18} {'reads':>6} {'hit rate':>9} {'median ms':>10} {'p99 ms':>8}",
    ]
    for kind, m in r["match"].items():
        lines.append(
            f"{kind:<18} {m['reads']:>6} {m['hit_rate']:>9.3f} "
            f"{m['median_ms']:>10.3f} {m['p99_ms']:>8.3f}"
        )
    return "\n".join(lines)


def cmd_bench_watchlist(args: argparse.Namespace) -> int:
    if not 1 <= args.entries <= 20_000_000:
        raise UsageError("--entries must be from 1 to 20000000")
    if not 1 <= args.reads <= 1_000_000:
        raise UsageError("--reads must be from 1 to 1000000")
    report = run(args.entries, args.reads, args.seed)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
