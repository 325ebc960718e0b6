"""Where each read goes after the pipeline: watchlist -> hit -> outbox.

:class:`Dispatcher` is the read sink of `run` and `replay`: it matches the read
against the lists in force, and a match becomes a :class:`~edge.delivery.hits.Hit`
that is committed to the outbox *before* anything else (alert, print, publish), so a
hit once made survives a crash. A non-hit read goes nowhere: its text is logged at
DEBUG only, and it is forgotten.

A correction (a read with ``corrects_event_id``, see :mod:`edge.tracking.track`) is
matched like any read. If the read it corrects raised a hit that the correction does
not raise again (the same entry), that hit is withdrawn: an ``lpr.withdrawal/1``
message on the same hit topic, naming the hit only, and the officer is told (unless
covert).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TextIO

from edge.config import Config
from edge.delivery.hits import (
    CONTEXT_IMAGE_MAX_BYTES,
    Hit,
    RaisedHit,
    Withdrawal,
    best_match,
    make_hit,
    same_entry,
)
from edge.delivery.messages import encode, hit_message, withdrawal_message, without_images
from edge.delivery.mqtt import Topics
from edge.delivery.outbox import Outbox
from edge.ids import new_event_id
from edge.sqlitedb import is_disk_error
from edge.types import PlateRead, PositionFix
from edge.watchlist.live import LiveWatchlist

log = logging.getLogger("edge.dispatch")

#: Reads remembered (event id, and the hit it raised if any) for their corrections. A
#: correction comes from the same track, seconds (a parked car: minutes) after its
#: read; this many reads cover hours of dense traffic in a few megabytes.
RECENT_READS = 10_000


class ReadSink(Protocol):
    """Where the dispatcher keeps every read besides: the read log
    (:class:`edge.privacy.readlog.ReadLog`)."""

    def add(self, read: PlateRead) -> None: ...


class Dispatcher:
    """Read sink: the hits among reads, committed to the outbox."""

    def __init__(
        self,
        config: Config,
        watchlists: LiveWatchlist,
        outbox: Outbox,
        *,
        alert: Callable[[Hit, bytes], None] | None = None,
        sent: Callable[[], None] | None = None,
        echo: TextIO | None = None,
        readlog: ReadSink | None = None,
        positions: Callable[[datetime], PositionFix | None] | None = None,
        alert_withdrawn: Callable[[Withdrawal, bytes], None] | None = None,
    ):
        self.config = config
        self.readlog = readlog
        self.positions = positions or (lambda moment: None)
        self.watchlists = watchlists
        self.outbox = outbox
        self.topics = Topics(config.mqtt.topic_prefix, config.vehicle.id)
        self.alert = alert
        self.alert_withdrawn = alert_withdrawn
        self.sent = sent or (lambda: None)
        self.echo = echo
        self.reads = 0
        self.hits = 0
        self.corrections = 0
        self.withdrawals = 0
        #: Recent reads' event ids -> the hit each raised (None: no hit), oldest first.
        self._recent_reads: OrderedDict[str, RaisedHit | None] = OrderedDict()
        #: Non-hit reads the read log could not store (a full or failing disk).
        self.reads_not_logged = 0

    def __call__(self, read: PlateRead) -> Hit | None:
        self.reads += 1
        self.watchlists.refresh()
        overturned = self._overturned_hit(read)
        match = best_match(
            read,
            self.watchlists.lists(),
            at=read.first_seen,
            max_distance=self.watchlists.max_distance,
        )
        if match is None:
            self._remember(read, None)
            if overturned is not None:
                self._withdraw(overturned, read)
            # Not a hit: the text stays out of every log at INFO and above (privacy),
            # and the read is kept or sent only where [privacy] says so.
            log.debug("read %s on %s: no watchlist match", read.plate, read.camera)
            if self.readlog is not None:
                self._log_read(read)
            return None
        if overturned is not None and not same_entry(overturned.entry, match.entry):
            # The corrected plate is another entry's: the first hit was for nobody.
            self._withdraw(overturned, read)
        hit = make_hit(
            read,
            match,
            self.config.vehicle.id,
            position=self.positions(read.first_seen),
            image_max_bytes=self.config.mqtt.plate_image_max_bytes,
            context_max_bytes=(
                CONTEXT_IMAGE_MAX_BYTES if self.config.privacy.context_image == "blurred" else 0
            ),
        )
        message = hit_message(hit)
        payload = encode(message)
        self.outbox.add("hit", hit.event_id, self.topics.hit, payload)
        self._remember(read, RaisedHit.of(hit))
        self.hits += 1
        self.sent()
        if not hit.covert and self.alert:
            self.alert(hit, payload)
        self._echo(message)
        return hit

    def _overturned_hit(self, read: PlateRead) -> RaisedHit | None:
        """For a correction, the hit its overturned read raised (now answered for:
        forgotten), or None (no hit, or a read no longer remembered)."""
        if read.corrects_event_id is None:
            return None
        self.corrections += 1
        if read.corrects_event_id not in self._recent_reads:
            log.warning(
                "read %s corrects read %s, which is no longer remembered: no hit of it "
                "can be withdrawn",
                read.event_id,
                read.corrects_event_id,
            )
            return None
        return self._recent_reads.pop(read.corrects_event_id)

    def _remember(self, read: PlateRead, hit: RaisedHit | None) -> None:
        self._recent_reads[read.event_id] = hit
        while len(self._recent_reads) > RECENT_READS:
            self._recent_reads.popitem(last=False)

    def _withdraw(self, hit: RaisedHit, correction: PlateRead) -> None:
        """Withdraw ``hit``, whose read ``correction`` overturned: committed to the
        outbox first, like a hit, then the officer is told (not for a covert hit)."""
        withdrawal = Withdrawal(
            event_id=new_event_id(),
            vehicle_id=self.config.vehicle.id,
            at=correction.last_seen,
            withdrawn=hit,
        )
        message = withdrawal_message(withdrawal)
        payload = encode(message)
        # Kind "hit": on the hit topic, and kept and purged as the hit it withdraws.
        self.outbox.add("hit", withdrawal.event_id, self.topics.hit, payload)
        self.withdrawals += 1
        log.info("hit %s withdrawn: its read was corrected (%s)", hit.event_id, withdrawal.event_id)
        self.sent()
        if not hit.covert and self.alert_withdrawn:
            self.alert_withdrawn(withdrawal, payload)
        self._echo(message)

    def _echo(self, message: dict) -> None:
        if self.echo:
            self.echo.write(json.dumps(without_images(message)) + "\n")
            self.echo.flush()

    def _log_read(self, read: PlateRead) -> None:
        """Keep a non-hit read in the read log; a disk that refuses it is counted and
        reported (status), never raised: it must not stop the next hit."""
        try:
            self.readlog.add(read)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_error(exc):
                raise
            self.reads_not_logged += 1
            if self.reads_not_logged == 1 or self.reads_not_logged % 100 == 0:
                log.error(
                    "read log: %d non-hit read(s) could not be kept (%s)",
                    self.reads_not_logged,
                    exc,
                )
