"""Timestamps as lpr-edge writes and reads them: ISO-8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a 'Z': ``2026-11-23T08:00:00.125Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time as :func:`iso_utc` writes it."""
    return iso_utc(datetime.now(UTC))


def parse_utc(text: str) -> datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime; without a zone it is
    taken as UTC. ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
