"""A real Mosquitto broker on a free loopback port, started and stopped by tests (the
broker code is :mod:`edge.bench.servers`, shared with ``lpr-edge bench hq``)."""

from __future__ import annotations

from pathlib import Path

from edge.bench.servers import Broker, find_mosquitto, free_port

__all__ = ["Broker", "durable_broker", "find_mosquitto", "free_port"]


def durable_broker(workdir: Path) -> Broker:
    """A broker that keeps sessions (subscriptions, queued QoS 1 messages) across a
    restart, as HQ's does."""
    port = free_port()
    (workdir / "db").mkdir(exist_ok=True)
    return Broker(
        workdir,
        port=port,
        config_text=(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {workdir / 'db'}/\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        ),
    )
