"""Retention: what the car keeps, and for how long (``[privacy]``).

* Delivered hits (and delivered audit copies) stay in the outbox for
  ``hit_retention_days`` after HQ acknowledged them, then go.
* Non-hit reads never leave the car (``publish_reads = true`` is refused at load):
  the local read log (only when ``keep_reads_seconds`` > 0) keeps them that long.
  With 0, anything left from an earlier setting is deleted at the next pass. Reads a
  version that still published them left in the outbox are deleted at the next pass,
  sent or not (``published_reads`` in the counts).
* Undelivered messages are never deleted: a hit is not lost to retention.

Applied continuously (every ``RETENTION_INTERVAL_S`` by the running service, which
also vacuums its databases daily; at the start and end of a replay) and on demand by
`lpr-edge purge`. Deleting means gone
from the files: rows are overwritten (``secure_delete``), the write-ahead log is
truncated, and `purge` also vacuums.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from edge.config import PrivacyConfig
from edge.delivery.outbox import Outbox
from edge.privacy.readlog import ReadLog

log = logging.getLogger("edge.retention")

#: Seconds between retention passes in the running service.
RETENTION_INTERVAL_S = 60.0
#: Seconds between the running service's VACUUMs of its databases (files shrink).
VACUUM_INTERVAL_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    hits: int = 0
    published_reads: int = 0
    logged_reads: int = 0

    @property
    def total(self) -> int:
        return self.hits + self.published_reads + self.logged_reads

    def to_json(self) -> dict:
        return asdict(self)


def apply_retention(
    privacy: PrivacyConfig,
    outbox: Outbox,
    readlog: ReadLog | None = None,
    *,
    now: float | None = None,
    vacuum: bool = False,
) -> PurgeCounts:
    """Delete what is past its retention; returns what went. Stamps the clock put in
    the future are first brought back to ``now`` (a clock that ran ahead and was
    corrected must not keep data for as long as it was wrong)."""
    now = time.time() if now is None else now
    outbox.restamp_future(now)
    if readlog:
        readlog.restamp_future(now)
    hit_cut = now - privacy.hit_retention_days * 86400.0
    read_cut = now - privacy.keep_reads_seconds
    counts = PurgeCounts(
        hits=outbox.purge_delivered(hit_cut, kinds=("hit", "audit")),
        published_reads=outbox.purge_kind("read"),
        logged_reads=readlog.purge(read_cut) if readlog else 0,
    )
    if counts.total or vacuum:
        outbox.compact(vacuum=vacuum)
    if vacuum and readlog:
        readlog.vacuum()
    return counts


class Retention:
    """Runs :func:`apply_retention` every ``interval`` seconds when :meth:`tick`ed;
    ``on_purge`` hears of every pass that deleted something (the audit trail)."""

    def __init__(
        self,
        privacy: PrivacyConfig,
        outbox: Outbox,
        readlog: ReadLog | None = None,
        *,
        interval: float = RETENTION_INTERVAL_S,
        on_purge: Callable[[PurgeCounts], None] | None = None,
    ):
        self.privacy = privacy
        self.outbox = outbox
        self.readlog = readlog
        self.interval = interval
        self.on_purge = on_purge
        self._next = 0.0
        self._next_vacuum: float | None = None

    def tick(self, now_mono: float | None = None) -> PurgeCounts | None:
        now_mono = time.monotonic() if now_mono is None else now_mono
        if now_mono < self._next:
            return None
        self._next = now_mono + self.interval
        if self._next_vacuum is None:  # not at start: a restart loop must stay cheap
            self._next_vacuum = now_mono + VACUUM_INTERVAL_S
        vacuum = now_mono >= self._next_vacuum
        if vacuum:
            self._next_vacuum = now_mono + VACUUM_INTERVAL_S
        return self.run(vacuum=vacuum)

    def run(self, *, vacuum: bool = False) -> PurgeCounts:
        counts = apply_retention(self.privacy, self.outbox, self.readlog, vacuum=vacuum)
        if counts.total:
            log.info(
                "retention: deleted %d delivered hit/audit message(s), %d published and "
                "%d logged non-hit read(s)",
                counts.hits,
                counts.published_reads,
                counts.logged_reads,
            )
        if self.on_purge and (counts.total or vacuum):
            self.on_purge(counts)
        return counts


def make_room(
    privacy: PrivacyConfig,
    outbox: Outbox,
    readlog: ReadLog | None,
    free_mb: Callable[[], float | None],
    min_free_mb: float,
) -> PurgeCounts | None:
    """Disk nearly full: delete what may go early, least valuable first (kept and
    published non-hit reads, then hits HQ already has), until ``min_free_mb`` is free
    again. Undelivered hits are never touched. None when there was room."""
    free = free_mb()
    if free is None or free >= min_free_mb:
        return None
    log.warning("disk: %.0f MB free (keep %d MB): deleting non-hit data first", free, min_free_mb)
    now = time.time()
    counts = PurgeCounts(
        published_reads=outbox.purge_kind("read"),
        logged_reads=readlog.purge(now) if readlog else 0,
    )
    outbox.compact(vacuum=True)
    free = free_mb()
    if free is not None and free < min_free_mb:
        hits = outbox.purge_delivered(now, kinds=("hit", "audit"))
        outbox.compact(vacuum=True)
        counts = PurgeCounts(hits, counts.published_reads, counts.logged_reads)
        log.warning("disk: deleted %d delivered hit/audit message(s) early", hits)
    return counts
