"""HQ retention: the policy (:class:`RetentionPolicy`), given by ``--keep-*`` options
to ``lpr-edge hq purge`` (:mod:`edge.hq.purge`, with ``hold``, ``release``, ``holds``)
and to the running ``lpr-edge hq``, which applies it by itself (:class:`PeriodicPurge`).

HQ keeps personal data only as long as the programme needs it (Personal Data
(Privacy) Ordinance, data protection principle 2): a hit goes 28 days after the car
recorded it, the footage limit the programme promises, unless an investigator holds
it for a case (``hold``; ``release`` ends it, and the hit goes at the next purge).
What the stores delete, and by which clock, is in
:class:`edge.hq.store.StoreRetention`. The defaults (:class:`RetentionPolicy`):

* hits 28 days, and not more: the promise is a ceiling, so a longer ``--keep-hits``
  is refused (a case hold is the way to keep one hit longer, and it is audited);
  a withdrawal goes with the hit it withdraws;
* vehicle statuses 7 days: a car's last state is operational and stale within a
  shift; a car silent for a week is offline whatever its last row says;
* rejects 7 days: excerpts of malformed or refused messages, which may hold a plate,
  kept long enough to diagnose a misbehaving client over a week, no longer;
* the vehicles' audit records 2 years: the trail that shows who queried the
  watchlist, applied a list or purged a car. It exists so that misuse can be
  investigated after the data itself is gone; 2 years is the period within which a
  complaint to the Privacy Commissioner is normally lodged (PDPO section 39(1)(a)).

Every purge (a dry run too), hold and release is a row of HQ's own audit (``hq_audit``).
"""

from __future__ import annotations

import argparse
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from edge.errors import UsageError
from edge.hq.console import escape_control, log
from edge.timefmt import iso_utc

#: Seconds in each unit a duration may be given in.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)

DAY = 86_400
#: The longest a hit may be kept without a case hold: the programme's promise.
MAX_HIT_SECONDS = 28 * DAY
#: How often the running HQ purges (and once at start).
DEFAULT_PURGE_EVERY = 3600
#: Who the running HQ's purges are recorded as in ``hq_audit``.
HQ_USER = "hq"


def parse_duration(option: str, text: str) -> float:
    """Seconds in ``text``, a positive number and a unit (``28d``, ``12h``, ``30m``,
    ``90s``, ``2w``); UsageError naming ``option`` otherwise."""
    found = _DURATION.fullmatch(text or "")
    seconds = float(found[1]) * UNITS[found[2].lower()] if found else 0.0
    if seconds <= 0:
        raise UsageError(
            f"{option} {escape_control(text or '')!r}: expected a positive duration, a "
            "number and a unit (s, m, h, d or w), e.g. 28d or 12h"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: 2419200 -> ``28d``."""
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long HQ keeps each kind of record, in seconds (defaults: module docstring)."""

    hits: float = MAX_HIT_SECONDS
    statuses: float = 7 * DAY
    rejects: float = 7 * DAY
    audit: float = 730 * DAY

    def before(self, now: datetime | None = None) -> dict[str, str]:
        """The moments before which each kind goes, as the stores take them."""
        now = now or datetime.now(UTC)
        return {name: iso_utc(now - timedelta(seconds=s)) for name, s in asdict(self).items()}

    def to_json(self) -> dict[str, str]:
        return {name: format_duration(s) for name, s in asdict(self).items()}


#: Option -> policy field, for ``hq`` and ``hq purge`` alike.
POLICY_OPTIONS = {
    "--keep-hits": "hits",
    "--keep-statuses": "statuses",
    "--keep-rejects": "rejects",
    "--keep-audit": "audit",
}


def policy_from_args(args: argparse.Namespace) -> RetentionPolicy:
    """The policy the ``--keep-*`` options give (defaults for those not given)."""
    periods = {}
    for option, field in POLICY_OPTIONS.items():
        text = getattr(args, option[2:].replace("-", "_"), None)
        if text is not None:
            periods[field] = parse_duration(option, text)
    if periods.get("hits", 0) > MAX_HIT_SECONDS:
        raise UsageError(
            f"--keep-hits {escape_control(args.keep_hits)}: longer than the 28 days the "
            "programme promises; keep a hit longer for a case with `lpr-edge hq hold`"
        )
    return RetentionPolicy(**periods)


class PeriodicPurge:
    """The running HQ's own purge: at start, then every ``every`` seconds, in a thread
    of its own, recorded as user :data:`HQ_USER`. Where several workers share a
    database only one purges at a time; the others skip that round. A failed purge
    is logged and tried again next round: hits keep arriving meanwhile. Leaving stops
    a purge at its next batch (the next start goes on from there)."""

    def __init__(self, store, policy: RetentionPolicy, every: float = DEFAULT_PURGE_EVERY):
        self.store = store
        self.policy = policy
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hq-purge", daemon=True)
        #: Purges done (not skipped) since start.
        self.rounds = 0

    def __enter__(self) -> PeriodicPurge:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def purge_once(self) -> dict[str, int] | None:
        counts = self.store.purge(
            self.policy.before(),
            user=HQ_USER,
            policy=self.policy.to_json(),
            wait=False,
            stopping=self._stop.is_set,
        )
        if counts is None:
            log.info("HQ: retention purge skipped (another worker is purging)")
            return None
        self.rounds += 1
        if any(counts.values()):
            log.info("HQ: retention purge deleted %s", counts)
        return counts

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.purge_once()
            except Exception as exc:  # (the subscriber must keep running)
                log.error("HQ: retention purge failed (tried again in %ss): %s", self.every, exc)
            self._stop.wait(self.every)
