"""Latency of passes: p50/p95/max over every pass and by kind of pass, and their lines
in the benchmarks' text reports."""

from __future__ import annotations

from edge.tracking.pipeline import latency_summary


def legible_summary(latencies: list[tuple[str, float]]) -> dict:
    """p50/p95/max over every pass, and per kind of pass (approached, followed,
    overtaking, crossing cars: where the slow reads come from)."""
    by_kind: dict[str, list[float]] = {}
    for kind, ms in latencies:
        by_kind.setdefault(kind, []).append(ms)
    every = [ms for _kind, ms in latencies]
    return {
        **latency_summary(every),
        "max": _rounded_max(every),
        "by_kind": {
            kind: {"passes": len(v), **latency_summary(v), "max": _rounded_max(v)}
            for kind, v in sorted(by_kind.items())
        },
    }


def _rounded_max(values: list[float]) -> float | None:
    return round(max(values), 1) if values else None


def legible_lines(what: str, lat: dict) -> list[str]:
    """Report lines for a :func:`legible_summary`: the overall figures, then by kind."""
    lines = [f"  read latency ms, {what}: p50 {lat['p50']}  p95 {lat['p95']}  max {lat['max']}"]
    kinds = lat.get("by_kind", {})
    if kinds:
        lines.append(
            "    by kind of pass: "
            + ", ".join(
                f"{kind} ({k['passes']}) p50 {k['p50']} p95 {k['p95']}" for kind, k in kinds.items()
            )
        )
    return lines
