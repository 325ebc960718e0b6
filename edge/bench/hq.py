"""`lpr-edge bench hq`: HQ under a fleet's load, and search over many stored hits.

**Load** (the default): starts a loopback Mosquitto (unless ``--broker``) configured
as the shipped ``config/mosquitto/lpr-edge.conf`` limits it (a million queued QoS 1
messages per client), a store (``--db sqlite``: a file in a temporary folder;
``--db postgres``: a throw-away PostgreSQL cluster with PostgreSQL's durable
defaults, fsync on; or ``--db URL`` of a server of yours), and ``--workers W`` real
``python -m edge hq --share bench --client-id wI --db ... --json`` processes, so what
is measured is the product. Then ``--vehicles N`` simulated vehicles publish hits at
QoS 1, built by the car's own :func:`edge.delivery.messages.hit_message` (random
Hong Kong-style plates, a ~4 KB JPEG plate crop, a GPS position), each vehicle on its
own topic ``lpr/v1/{vehicle}/hit`` with its own ``vehicle_id``. The vehicles are
multiplexed over ``--publishers`` processes, one MQTT connection each (a broker
cares about topics, not sockets, when routing; a thousand sockets would measure the
bench's own Python), publishing at ``--rate`` hits/s in all (0: as fast as the
broker acknowledges, at most :data:`WINDOW` unacknowledged per connection).

What is measured, per hit: *publish time* is the publisher's wall clock just before
``publish``; *stored time* is the ``hits.received_at`` column the worker writes (its
wall clock, millisecond resolution, taken inside the inserting transaction, just
before it commits). Both clocks are this machine's, so latency = stored - publish,
±1 ms. *stored/s* is over the steady part: the hits between the 10th and 90th
percentile of stored time, divided by the time between them. After the publishers
finish, the bench waits until every acknowledged hit is stored or nothing new has
arrived for ``--drain`` seconds; *lost* is a hit the broker acknowledged and no
worker stored, *duplicates* a hit stored under one ``event_id`` more than once
(the store must recognise a redelivery). Everything is bounded: ``--count`` hits
(or ``--duration`` seconds), and ``--timeout`` for the whole run.

**Search** (``--search-hits N``): generates N stored hits directly in the database
(PostgreSQL: ``INSERT ... SELECT`` over ``generate_series`` in chunks; SQLite:
``executemany`` in one transaction; the hits table's own indexes are dropped for the
load and made again from their stored definitions after it), then times
:meth:`edge.hq.store.StoreReads.search` for plates that are stored (exact), for one
look-alike away from a stored plate, and for plates never stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.bench.servers import Broker, PostgresServer
from edge.bench.watchlist import _LOOKALIKE_PAIRS, random_plate
from edge.config import PROJECT_ROOT, MqttConfig
from edge.errors import UsageError
from edge.timefmt import iso_utc

PREFIX = "lpr/v1"
SHARE_GROUP = "bench"
#: Unacknowledged publishes per publisher connection when publishing flat out: enough
#: to keep the broker busy, few enough that paho's queue stays small.
WINDOW = 500
MAX_COUNT = 2_000_000
MAX_SEARCH_HITS = 50_000_000
_LISTS = ("stolen-vehicle", "wanted-person", "missing-person")
_CAMERAS = ("front-left", "front-right")

#: What HQ's broker keeps for a subscriber that lags (config/mosquitto/lpr-edge.conf).
BROKER_LIMITS = "max_queued_messages 1000000\nmax_queued_bytes 2147483648\n"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plate_jpeg(seed: int = 1) -> bytes:
    """A plate crop as the car sends one: 240x60, dark text on light, JPEG q85."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    image = np.full((60, 240), 210, np.uint8)
    cv2.putText(image, "AB 1234", (12, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 20, 4)
    noisy = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(
        ".jpg", cv2.GaussianBlur(noisy, (3, 3), 0), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    assert ok
    return data.tobytes()


def _template(vehicle: str, jpeg: bytes) -> dict:
    """A hit message of ``vehicle`` from the car's own builder."""
    from edge.delivery.hits import Hit
    from edge.delivery.messages import hit_message
    from edge.types import PlateRead, Position, PositionFix, TextCandidate
    from edge.watchlist.lists import WatchlistEntry, WatchlistMatch

    now = datetime.now(UTC)
    read = PlateRead(
        event_id="0",
        camera=_CAMERAS[0],
        source="rtsp://192.0.2.10/stream",
        plate="AB1234",
        confidence=0.93,
        candidates=(TextCandidate("AB1234", 0.93),),
        frames=6,
        readings=5,
        first_seen=now,
        last_seen=now + timedelta(seconds=1.2),
        first_frame=None,
        last_frame=None,
        box=(100.0, 200.0, 220.0, 240.0),
        crop=None,
        last_capture_mono=0.0,
        emitted_mono=0.0,
    )
    entry = WatchlistEntry(
        plate="AB1234", list=_LISTS[0], priority=1, reason="reported stolen", entry_id="17"
    )
    fix = PositionFix(Position(22.3193, 114.1694, now, 90.0, 42.0), 0.4, False)
    return hit_message(Hit(read, WatchlistMatch(entry, "exact", 0.0, "AB1234"), vehicle, fix, jpeg))


@dataclass
class PublisherJob:
    index: int
    host: str
    port: int
    vehicles: list[str]
    count: int
    #: Hits/s for this publisher; 0 for as fast as acknowledged.
    rate: float
    #: Seconds after the start at which to stop even if ``count`` is not reached.
    stop_after: float
    seed: int
    jpeg: bytes = field(repr=False, default=b"")


def _publisher(job: PublisherJob, ready, go, results) -> None:
    """One publisher process: connects, waits for ``go``, publishes, and puts
    (index, [(event_id, publish_time)], acknowledged flags, error) on ``results``."""
    from edge.delivery.messages import encode
    from edge.delivery.mqtt import connect, new_client
    from edge.ids import new_event_id

    rng = random.Random(job.seed)
    client = new_client(MqttConfig(host=job.host, port=job.port), f"bench-pub-{job.index}")
    client.max_inflight_messages_set(WINDOW)
    acked = [0]
    client.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    state = {"connected": False}
    client.on_connect = lambda *a: state.__setitem__("connected", True)
    connect(client, MqttConfig(host=job.host, port=job.port))
    client.loop_start()
    deadline = time.monotonic() + 30
    while not state["connected"] and time.monotonic() < deadline:
        time.sleep(0.01)
    templates = {v: _template(v, job.jpeg) for v in job.vehicles}
    ready.put(job.index)
    go.wait()
    sent: list[tuple[str, float]] = []
    infos = []
    start = time.monotonic()
    stop_at = start + job.stop_after
    error = None
    try:
        for i in range(job.count):
            if job.rate > 0:
                due = start + i / job.rate
                wait = due - time.monotonic()
                if wait > 0.0005:
                    time.sleep(wait)
            else:
                while len(infos) - acked[0] >= WINDOW and time.monotonic() < stop_at:
                    time.sleep(0.0005)
            if time.monotonic() >= stop_at:
                break
            vehicle = job.vehicles[rng.randrange(len(job.vehicles))]
            message = dict(templates[vehicle])
            plate = random_plate(rng)
            now = datetime.now(UTC)
            seen = iso_utc(now - timedelta(seconds=1.5))
            message.update(
                event_id=new_event_id(),
                camera=_CAMERAS[i % 2],
                plate=plate,
                observed_at=seen,
                first_seen=seen,
                last_seen=iso_utc(now - timedelta(seconds=0.3)),
                confidence=round(0.8 + rng.random() * 0.19, 4),
            )
            wl = dict(message["watchlist"])
            wl.update(list=_LISTS[i % 3], entry_plate=plate, matched_text=plate, priority=1 + i % 9)
            message["watchlist"] = wl
            payload = encode(message)
            t = time.time()
            infos.append(client.publish(f"{PREFIX}/{vehicle}/hit", payload, qos=1))
            sent.append((message["event_id"], t))
        end = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(max(0.0, end - time.monotonic()))
    except Exception as exc:  # reported, not raised: the parent must still clean up
        error = f"{type(exc).__name__}: {exc}"
    flags = [info.is_published() for info in infos]
    client.disconnect()
    client.loop_stop()
    results.put((job.index, sent, flags, error))


# --- servers and workers ---------------------------------------------------------------


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--broker {text!r}: expected HOST:PORT")
    return host, int(port)


class _Servers(contextlib.ExitStack):
    """Whatever the bench starts, stopped (and its folders removed) on exit."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lpr-bench-hq-"))
        self.callback(shutil.rmtree, self.tmp, True)
        #: Processes whose CPU time the report gives, by part (those started here).
        self.broker_pid: int | None = None
        self.pg_datadir: Path | None = None

    def broker(self, spec: str | None) -> tuple[str, int]:
        if spec:
            return _parse_hostport(spec)
        try:
            broker = Broker(self.tmp, extra_config=BROKER_LIMITS).start()
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        self.callback(broker.stop)
        self.broker_pid = broker.process.pid if broker.process else None
        return "127.0.0.1", broker.port

    def database(self, db: str, *, durable: bool = True) -> str:
        if db == "sqlite":
            return str(self.tmp / "hq.sqlite")
        if db == "postgres":
            try:
                server = PostgresServer(durable=durable)
            except RuntimeError as exc:
                raise UsageError(str(exc)) from None
            self.callback(server.stop)
            try:
                server.start()
            except RuntimeError as exc:
                raise UsageError(f"cannot start PostgreSQL: {exc}") from None
            self.pg_datadir = server.datadir
            return server.url("bench")
        return db


def _open_store(db: str):
    from edge.hq.command import open_store

    return open_store(db)


def _is_postgres(db: str) -> bool:
    from edge.hq.pgstore import is_postgres_url

    return is_postgres_url(db)


def _start_workers(tmp: Path, host: str, port: int, db: str, n: int, stack) -> list:
    workers = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    for i in range(n):
        out, err = tmp / f"w{i}.out", tmp / f"w{i}.err"
        argv = [sys.executable, "-m", "edge", "hq", "--host", host, "--port", str(port)]
        argv += ["--share", SHARE_GROUP, "--client-id", f"w{i}", "--db", db, "--json"]
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(argv, stdout=o, stderr=e, env=env, cwd=PROJECT_ROOT)
        stack.callback(_stop_process, proc)
        workers.append((proc, err))
    deadline = time.monotonic() + 60
    for proc, err in workers:
        while "HQ: subscribed" not in err.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"an HQ worker did not start: {err.read_text()[-2000:]}")
            time.sleep(0.05)
    return workers


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process of ``pids`` has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def _parts(servers: _Servers, workers: list) -> dict[str, list[int]]:
    """The processes of each part of HQ the bench started: workers, broker, database."""
    parts = {"workers": [proc.pid for proc, _ in workers]}
    if servers.broker_pid:
        parts["broker"] = [servers.broker_pid]
    if servers.pg_datadir is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((servers.pg_datadir / "postmaster.pid").read_text().split()[0])
            parts["database"] = [postmaster, *_children(postmaster)]
    return parts


def _cpu_snapshot(servers: _Servers, workers: list) -> dict[str, dict[int, float]]:
    return {part: _cpu_by_pid(pids) for part, pids in _parts(servers, workers).items()}


def _cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each part used between two snapshots (a process that started in
    between counts whole)."""
    return {
        part: round(sum(t - before.get(part, {}).get(pid, 0.0) for pid, t in now.items()), 2)
        for part, now in after.items()
    }


def _stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _worker_stats(err: Path) -> dict:
    for line in reversed(err.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    return {}


def _stored_rows(db: str, since: str) -> list[tuple[str, str]]:
    """(event_id, received_at) of every hit stored since ``since`` (ISO, as stored)."""
    sql = "SELECT event_id, received_at FROM hits WHERE received_at >= {m}"
    if _is_postgres(db):
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute(sql.format(m="%s"), (since,)).fetchall()
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql.format(m="?"), (since,)).fetchall()


def _stored_count(db: str, since: str) -> int:
    sql = "SELECT COUNT(*) FROM hits WHERE received_at >= {m}"
    if _is_postgres(db):
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute(sql.format(m="%s"), (since,)).fetchone()[0]
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql.format(m="?"), (since,)).fetchone()[0]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- the load run ----------------------------------------------------------------------


def run_load(args: argparse.Namespace) -> dict:
    count = args.count
    stop_after = args.timeout
    if args.duration is not None:
        stop_after = min(stop_after, args.duration)
        count = int(args.rate * args.duration) if args.rate > 0 else MAX_COUNT
    publishers = max(1, min(args.publishers, args.vehicles))
    vehicles = [f"car-{i:05d}" for i in range(args.vehicles)]
    jpeg = plate_jpeg(args.seed)
    with _Servers() as servers:
        host, port = servers.broker(args.broker)
        db = servers.database(args.db)
        _open_store(db).close()  # migrated once, before the workers race to
        workers = _start_workers(servers.tmp, host, port, db, args.workers, servers)
        ctx = multiprocessing.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = []
        for p in range(publishers):
            share = count // publishers + (1 if p < count % publishers else 0)
            job = PublisherJob(
                index=p,
                host=host,
                port=port,
                vehicles=vehicles[p::publishers],
                count=share,
                rate=args.rate / publishers,
                stop_after=stop_after,
                seed=args.seed * 1000 + p,
                jpeg=jpeg,
            )
            proc = ctx.Process(target=_publisher, args=(job, ready, go, results), daemon=True)
            proc.start()
            servers.callback(_end_publisher, proc)
            procs.append(proc)
        for _ in procs:
            ready.get(timeout=120)
        since = iso_utc(datetime.now(UTC) - timedelta(seconds=1))
        cpu_before = _cpu_snapshot(servers, workers)
        go.set()
        t0 = time.time()
        sent: list[tuple[str, float]] = []
        acked_ids: set[str] = set()
        unacked = 0
        errors = []
        for _ in procs:
            try:
                _index, part, flags, error = results.get(timeout=stop_after + 120)
            except queue.Empty:
                errors.append("a publisher did not report")
                continue
            if error:
                errors.append(error)
            for (event_id, t), ok in zip(part, flags, strict=True):
                sent.append((event_id, t))
                if ok:
                    acked_ids.add(event_id)
                else:
                    unacked += 1
        published_s = max((t for _, t in sent), default=t0) - t0
        # Drain: until every acknowledged hit is stored, or none came for --drain s.
        last, last_change = -1, time.monotonic()
        while True:
            stored = _stored_count(db, since)
            if stored != last:
                last, last_change = stored, time.monotonic()
            if stored >= len(acked_ids) or time.monotonic() - last_change > args.drain:
                break
            time.sleep(0.2)
        cpu = _cpu_used(cpu_before, _cpu_snapshot(servers, workers))
        rows = _stored_rows(db, since)
        for proc, _ in workers:
            _stop_process(proc)
        worker_stats = [_worker_stats(err) for _, err in workers]
    report = _load_report(
        args, publishers, sent, acked_ids, unacked, rows, published_s, worker_stats, errors
    )
    report["cpu_s"] = cpu
    stored = report["stored"]
    report["cpu_ms_per_hit"] = {
        k: round(v * 1000 / stored, 3) if stored else None for k, v in cpu.items()
    }
    return report


def _end_publisher(proc) -> None:
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


def _load_report(
    args, publishers, sent, acked_ids, unacked, rows, published_s, worker_stats, errors
):
    published = dict(sent)
    stored_at: dict[str, float] = {}
    seen: dict[str, int] = {}
    for event_id, received in rows:
        if event_id not in published:
            continue
        seen[event_id] = seen.get(event_id, 0) + 1
        at = _epoch(received)
        stored_at[event_id] = min(at, stored_at.get(event_id, at))
    latencies = [(stored_at[e] - published[e]) * 1000 for e in stored_at]
    times = sorted(stored_at.values())
    steady = None
    if len(times) >= 10:
        lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
        span = times[hi] - times[lo]
        steady = round((hi - lo) / span, 1) if span > 0 else None
    lost = sorted(e for e in acked_ids if e not in stored_at)
    duplicates = sum(n - 1 for n in seen.values() if n > 1)

    def ms(v):
        return None if v is None else round(v, 1)

    return {
        "db": args.db if args.db in ("sqlite", "postgres") else "url",
        "workers": args.workers,
        "vehicles": args.vehicles,
        "publishers": publishers,
        "rate": args.rate,
        "published": len(sent),
        "acknowledged": len(acked_ids),
        "unacknowledged": unacked,
        "publish_rate": round(len(sent) / published_s, 1) if published_s > 0 else None,
        "stored": len(stored_at),
        "stored_per_s": steady,
        "latency_ms": {
            "p50": ms(_percentile(latencies, 0.5)),
            "p95": ms(_percentile(latencies, 0.95)),
            "max": ms(max(latencies, default=None)),
        },
        "lost": len(lost),
        "lost_examples": lost[:5],
        "duplicates": duplicates,
        "redeliveries_seen": sum(s.get("duplicates", 0) for s in worker_stats),
        "worker_hits": [s.get("hits") for s in worker_stats],
        "rejected": sum(sum(s.get("rejected", {}).values()) for s in worker_stats),
        "store_errors": sum(s.get("store_errors", 0) for s in worker_stats),
        "errors": errors,
    }


def format_load(r: dict) -> str:
    lat = r["latency_ms"]
    rate = "as fast as possible" if not r["rate"] else f"{r['rate']:g} hits/s"
    return "\n".join(
        [
            f"HQ on {r['db']}, {r['workers']} worker(s); {r['vehicles']} vehicles over "
            f"{r['publishers']} connection(s), {rate}",
            f"published {r['published']} ({r['acknowledged']} acknowledged by the broker) "
            f"at {r['publish_rate']} hits/s",
            f"stored {r['stored']}: {r['stored_per_s']} hits/s (steady part)",
            f"latency publish -> stored: p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
            f"max {lat['max']} ms",
            f"lost {r['lost']}, duplicates {r['duplicates']} (redeliveries recognised "
            f"{r['redeliveries_seen']}); per worker {r['worker_hits']}; rejected "
            f"{r['rejected']}, store errors {r['store_errors']}",
            "CPU ms per hit stored: "
            + ", ".join(f"{k} {v}" for k, v in r.get("cpu_ms_per_hit", {}).items()),
        ]
        + [f"error: {e}" for e in r["errors"]]
    )


# --- the search run --------------------------------------------------------------------

_HK = "ABCDEFGHJKLMNPRSTUVWXYZ"

#: One stored hit as SQL text (PostgreSQL): a message of the car's shape without its
#: image (a crop in 10 million rows would be tens of GB, and search never reads it).
_PG_ROW = """
SELECT e, v, c, p, o, o, l, pr, 'exact', false,
  '{"schema":"lpr.hit/1","event_id":"' || e || '","vehicle_id":"' || v || '","camera":"'
  || c || '","plate":"' || p || '","confidence":0.93,"observed_at":"' || o
  || '","first_seen":"' || o || '","last_seen":"' || o || '","frames":6,"watchlist":'
  || '{"list":"' || l || '","entry_id":"W' || (g %% 100000) || '","entry_plate":"' || p
  || '","reason":"bench","priority":' || pr || ',"match":"exact","distance":0,'
  || '"matched_text":"' || p || '","covert":false},"position":null,"plate_image":null,'
  || '"source":null}'
FROM (
  SELECT g, md5(g::text)::uuid::text AS e, 'car-' || lpad((g %% 1000)::text, 5, '0') AS v,
    (ARRAY['front-left','front-right'])[1 + g %% 2] AS c,
    CASE WHEN random() < 0.1 THEN substr(%(hk)s, 1 + floor(random() * 23)::int, 1)
         ELSE substr(%(hk)s, 1 + floor(random() * 23)::int, 1)
           || substr(%(hk)s, 1 + floor(random() * 23)::int, 1) END
      || (1 + floor(random() * 9999)::int)::text AS p,
    to_char(timestamp '2025-01-01' + g * interval '6 seconds',
            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS o,
    (ARRAY['stolen-vehicle','wanted-person','missing-person'])[1 + g %% 3] AS l,
    1 + (g %% 9)::int AS pr
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
) AS s
"""

_COLUMNS = (
    'event_id, vehicle_id, camera, plate, observed_at, received_at, "list", priority, '
    '"match", covert, payload'
)


def _generate_pg(url: str, n: int, chunk: int, progress) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SELECT setseed(0.42)")
        indexes = db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'hits' "
            "AND indexdef NOT LIKE '%UNIQUE%'"
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for lo in range(1, n + 1, chunk):
            hi = min(n, lo + chunk - 1)
            db.execute(
                f"INSERT INTO hits ({_COLUMNS}) {_PG_ROW}",  # type: ignore[arg-type]
                {"hk": _HK, "lo": lo, "hi": hi},
            )
            progress(hi, time.perf_counter() - t0)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            db.execute(definition)  # type: ignore[arg-type]
        db.execute("ANALYZE hits")
        return load_s, time.perf_counter() - t0


def _generate_sqlite(path: str, n: int, chunk: int, progress) -> tuple[float, float]:
    rng = random.Random(42)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous=OFF")
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hits' "
            "AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        t0 = time.perf_counter()

        def rows(lo: int, hi: int):
            for g in range(lo, hi + 1):
                letters = (
                    rng.choice(_HK) if rng.random() < 0.1 else rng.choice(_HK) + rng.choice(_HK)
                )
                p = f"{letters}{rng.randint(1, 9999)}"
                o = iso_utc(start + timedelta(seconds=6 * g))
                v, c, lst, pr = f"car-{g % 1000:05d}", _CAMERAS[g % 2], _LISTS[g % 3], 1 + g % 9
                e = f"{g:032x}"
                payload = json.dumps(
                    {"schema": "lpr.hit/1", "event_id": e, "vehicle_id": v, "camera": c,
                     "plate": p, "observed_at": o,
                     "watchlist": {"list": lst, "entry_id": f"W{g % 100000}", "entry_plate": p,
                                   "reason": "bench", "priority": pr, "match": "exact",
                                   "distance": 0, "covert": False},
                     "position": None, "plate_image": None, "source": None},
                    separators=(",", ":"),
                )  # fmt: skip
                yield (e, v, c, p, o, o, lst, pr, "exact", 0, payload)

        db.execute("BEGIN")
        for lo in range(1, n + 1, chunk):
            hi = min(n, lo + chunk - 1)
            db.executemany(
                f"INSERT INTO hits ({_COLUMNS}) VALUES ({', '.join('?' * 11)})", rows(lo, hi)
            )
            progress(hi, time.perf_counter() - t0)
        db.execute("COMMIT")
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, definition in indexes:
            db.execute(definition)
        db.execute("ANALYZE")
        return load_s, time.perf_counter() - t0


def _lookalike(plate: str, rng: random.Random) -> str | None:
    slots = [i for i, ch in enumerate(plate) if ch in _LOOKALIKE_PAIRS]
    if not slots:
        return None
    i = rng.choice(slots)
    return plate[:i] + _LOOKALIKE_PAIRS[plate[i]] + plate[i + 1 :]


def _time_searches(store, plates: list[str]) -> dict:
    times, found = [], []
    for plate in plates:
        t0 = time.perf_counter()
        results = store.search(plate)
        times.append((time.perf_counter() - t0) * 1000)
        found.append(len(results))
    return {
        "searches": len(plates),
        "median_ms": round(statistics.median(times), 2) if times else None,
        "p95_ms": round(_percentile(times, 0.95) or 0.0, 2) if times else None,
        "max_ms": round(max(times), 2) if times else None,
        "mean_results": round(statistics.fmean(found), 1) if found else None,
    }


def run_search(args: argparse.Namespace) -> dict:
    n = args.search_hits
    chunk = 1_000_000 if n >= 5_000_000 else max(1, n // 5)
    verbose = not args.json

    def progress(done: int, seconds: float) -> None:
        if verbose and n >= 1_000_000:
            print(f"  generated {done:,} hits in {seconds:.0f} s", file=sys.stderr, flush=True)

    with _Servers() as servers:
        # Durability does not change what a search reads; the load is faster without.
        db = servers.database(args.db, durable=False)
        _open_store(db).close()  # (creates the tables the rows go into)
        if _is_postgres(db):
            load_s, index_s = _generate_pg(db, n, chunk, progress)
        else:
            load_s, index_s = _generate_sqlite(db, n, chunk, progress)
        rng = random.Random(args.seed)
        with _open_store(db) as store:
            ids = [rng.randint(1, n) for _ in range(args.searches)]
            marks = ", ".join([store.MARK] * len(ids))
            _, rows = store._read(f"SELECT plate FROM hits WHERE id IN ({marks})", ids)
            stored = [r[0] for r in rows]
            exact = [rng.choice(stored) for _ in range(args.searches)]
            lookalikes = []
            while len(lookalikes) < args.searches:
                variant = _lookalike(rng.choice(stored), rng)
                if variant:
                    lookalikes.append(variant)
            # I, O and Q are in no Hong Kong mark: these plates are never stored.
            misses = ["IOQ" + str(rng.randint(1, 9999)) for _ in range(args.searches)]
            _time_searches(store, exact[:5])  # warm the connection and the cache a little
            report = {
                "db": args.db if args.db in ("sqlite", "postgres") else "url",
                "hits": n,
                "generate_s": round(load_s, 1),
                "index_s": round(index_s, 1),
                "search": {
                    "exact": _time_searches(store, exact),
                    "lookalike": _time_searches(store, lookalikes),
                    "miss": _time_searches(store, misses),
                },
            }
    return report


def format_search(r: dict) -> str:
    lines = [
        f"{r['hits']:,} stored hits on {r['db']}: generated in {r['generate_s']} s, "
        f"indexed in {r['index_s']} s",
        f"{'search':<10} {'n':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'results':>8}",
    ]
    for kind, m in r["search"].items():
        lines.append(
            f"{kind:<10} {m['searches']:>5} {m['median_ms']:>10.2f} {m['p95_ms']:>8.2f} "
            f"{m['max_ms']:>8.2f} {m['mean_results']:>8.1f}"
        )
    return "\n".join(lines)


def cmd_bench_hq(args: argparse.Namespace) -> int:
    if not 1 <= args.vehicles <= 100_000:
        raise UsageError("--vehicles must be from 1 to 100000")
    if not 1 <= args.workers <= 32:
        raise UsageError("--workers must be from 1 to 32")
    if not 0 <= args.rate <= 100_000:
        raise UsageError("--rate must be from 0 (as fast as possible) to 100000")
    if not 1 <= args.count <= MAX_COUNT:
        raise UsageError(f"--count must be from 1 to {MAX_COUNT}")
    if args.duration is not None and not 0 < args.duration <= 3600:
        raise UsageError("--duration must be more than 0 and at most 3600 seconds")
    if not 1 <= args.publishers <= 64:
        raise UsageError("--publishers must be from 1 to 64")
    if args.search_hits is not None:
        if not 1 <= args.search_hits <= MAX_SEARCH_HITS:
            raise UsageError(f"--search-hits must be from 1 to {MAX_SEARCH_HITS}")
        report = run_search(args)
        print(json.dumps(report) if args.json else format_search(report))
        return 0
    report = run_load(args)
    print(json.dumps(report) if args.json else format_load(report))
    return 1 if report["errors"] else 0
