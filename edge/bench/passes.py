"""Scoring a photo clip pass by pass (see :mod:`edge.bench.photoclips`): the passes
follow one another, so every read belongs to the pass on screen when it began. Kept
apart from the renderer so that a change here never invalidates cached clips."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from edge.synth.clipspec import ClipTruth, PassTruth
from edge.types import PlateRead

#: Plate width bands (widest in the clip, px) for the misses-by-width table.
WIDTH_BANDS = (0, 80, 120, 180, 260)
#: Confidence bands of the reliability table (lower edges).
CONFIDENCE_BANDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """What became of one pass: its reads (those emitted while it was on screen), and
    the reads a later correction overturned (HQ and the officer saw them, then their
    correction; the pass is judged on what stands)."""

    truth: PassTruth
    reads: tuple[PlateRead, ...]
    fine: frozenset[str]
    overturned: tuple[PlateRead, ...] = ()

    @property
    def exact(self) -> bool:
        return any(r.plate == self.truth.text for r in self.reads)

    @property
    def wrong(self) -> int:
        """Reads of a text that is neither this plate nor another labelled one."""
        return sum(1 for r in self.reads if r.plate != self.truth.text and r.plate not in self.fine)

    @property
    def duplicates(self) -> int:
        return max(0, sum(1 for r in self.reads if r.plate == self.truth.text) - 1)

    @property
    def wrong_corrected(self) -> int:
        """Wrong reads that a later correction overturned."""
        return sum(
            1 for r in self.overturned if r.plate != self.truth.text and r.plate not in self.fine
        )

    @property
    def counted(self) -> bool:
        return self.truth.first_legible_frame is not None


def pass_outcomes(truth: ClipTruth, reads: list[PlateRead]) -> list[PassOutcome]:
    """Each pass with the reads whose first frame falls in its stretch of the clip
    (from its first frame to the next pass's; a read with no frame numbers goes by
    text). The passes of a photo clip follow one another, never overlap."""
    starts = [p.first_frame for p in truth.passes]
    owned: list[list[PlateRead]] = [[] for _ in truth.passes]
    for read in reads:
        if read.first_frame is None:
            index = next((i for i, p in enumerate(truth.passes) if p.text == read.plate), None)
        else:
            # The last pass begun by the read's first frame (passes are in frame order).
            index = bisect.bisect_right(starts, read.first_frame) - 1
            if index < 0 or read.first_frame > truth.frame_count:
                index = None
        if index is not None:
            owned[index].append(read)
    fine = frozenset(truth.fine_to_read)
    corrected = {r.corrects_event_id for r in reads if r.corrects_event_id}
    return [
        PassOutcome(
            p,
            tuple(r for r in mine if r.event_id not in corrected),
            fine,
            tuple(r for r in mine if r.event_id in corrected),
        )
        for p, mine in zip(truth.passes, owned, strict=True)
    ]


def _rate(n: int, of: int) -> float:
    return round(n / of, 3) if of else 0.0


def pass_listing(outcomes: list[PassOutcome]) -> list[dict]:
    """Each pass and the reads it got, for finding where misses and wrong reads come
    from (`bench video --photos -v`)."""
    rows = []
    for o in outcomes:
        t = o.truth
        rows.append(
            {
                "plate": t.text,
                "plate_kind": t.style,
                "motion": t.kind,
                "widest_px": round(t.peak_width),
                "read_exactly": o.exact,
                "reads": [
                    {
                        "plate": r.plate,
                        "confidence": round(r.confidence, 3),
                        "frames": None
                        if r.first_frame is None
                        else [r.first_frame - t.first_frame, r.last_frame - t.first_frame],
                        "width_px": round(r.box[2] - r.box[0]),
                        "overturned": r in o.overturned,
                        "verdict": "right"
                        if r.plate == t.text
                        else ("fine" if r.plate in o.fine else "wrong"),
                    }
                    for r in sorted((*o.overturned, *o.reads), key=lambda r: r.emitted_mono)
                ],
            }
        )
    return rows


def summarise_outcomes(outcomes: list[PassOutcome]) -> dict:
    """Passes read exactly, wrong reads and duplicates overall, per kind of plate and
    per width band; and the reliability of the reads' confidence."""
    counted = [o for o in outcomes if o.counted]

    def block(group: list[PassOutcome]) -> dict:
        exact = sum(o.exact for o in group)
        return {
            "passes": len(group),
            "read_exactly": exact,
            "exact_rate": _rate(exact, len(group)),
            "wrong_reads": sum(o.wrong for o in group),
            "wrong_then_corrected": sum(o.wrong_corrected for o in group),
            "duplicate_reads": sum(o.duplicates for o in group),
            "missed": len(group) - exact,
        }

    by_kind: dict[str, list[PassOutcome]] = {}
    for o in counted:
        by_kind.setdefault(o.truth.style, []).append(o)
    edges = (*WIDTH_BANDS[1:], math.inf)
    by_width: dict[str, list[PassOutcome]] = {
        (f"{low}-{high:g} px" if high != math.inf else f">={low} px"): []
        for low, high in zip(WIDTH_BANDS, edges, strict=True)
    }
    for o in counted:
        low = max(b for b in WIDTH_BANDS if o.truth.peak_width >= b)
        high = edges[WIDTH_BANDS.index(low)]
        label = f"{low}-{high:g} px" if high != math.inf else f">={low} px"
        by_width.setdefault(label, []).append(o)
    # Every read that went out, overturned ones included: each was published with its
    # confidence.
    reads = [
        (r.confidence, r.plate == o.truth.text)
        for o in outcomes
        for r in (*o.reads, *o.overturned)
        if r.plate not in o.fine
    ]
    return {
        **block(counted),
        "never_legible": len(outcomes) - len(counted),
        "by_plate_kind": {k: block(v) for k, v in sorted(by_kind.items())},
        "by_width": {k: block(v) for k, v in by_width.items()},
        "reliability": reliability(reads),
    }


def reliability(reads: list[tuple[float, bool]]) -> list[dict]:
    """Confidence band -> reads -> share right: a read published at 0.9 should be
    right about 90% of the time."""
    rows = []
    uppers = (*CONFIDENCE_BANDS[1:], 1.0001)
    for low, high in zip(CONFIDENCE_BANDS, uppers, strict=True):
        inside = [right for conf, right in reads if low <= conf < high]
        mean = [conf for conf, _ in reads if low <= conf < high]
        rows.append(
            {
                "band": f"{low:.2f}-{min(high, 1.0):.2f}",
                "reads": len(inside),
                "right": sum(inside),
                "share_right": _rate(sum(inside), len(inside)),
                "mean_confidence": round(float(np.mean(mean)), 3) if mean else None,
            }
        )
    return rows


#: Plate widths (px) from which the latency of a read is also measured.
LATENCY_WIDTHS = (60, 80, 100, 120)


def first_frame_at_width(truth: PassTruth, width: float, frame_size: tuple[int, int]) -> int | None:
    """The first frame in which the whole plate is in the picture and at least
    ``width`` px wide; None if it never is."""
    w, h = frame_size
    for k, (x1, y1, x2, y2) in enumerate(truth.boxes):
        if x2 - x1 >= width and x1 > 0 and y1 > 0 and x2 < w and y2 < h:
            return truth.first_frame + k
    return None


def decision_latency_by_width(
    outcomes: list[PassOutcome],
    fps: float,
    frame_size: tuple[int, int],
    *,
    samples: bool = False,
    live: bool = False,
) -> dict[str, dict] | dict[str, list[float]]:
    """Video time from the first frame a plate is ``W`` px wide to the frame that
    decided its first right read, per ``W`` of :data:`LATENCY_WIDTHS` (0 when the
    read was decided sooner): where the recogniser reads plates reliably, how long
    the pipeline takes from there. Only passes read exactly and ever that wide count.
    ``samples``: the delays themselves (ms), to pool over clips. ``live``: to the read
    being emitted (wall clock, for clips played as live cameras) instead of to the
    deciding frame (video time, the same on any machine)."""
    out = {}
    for width in LATENCY_WIDTHS:
        delays = []
        for o in outcomes:
            right = [r for r in (*o.overturned, *o.reads) if r.plate == o.truth.text]
            start = first_frame_at_width(o.truth, width, frame_size)
            if not right or start is None or right[0].last_frame is None:
                continue
            first = min(right, key=lambda r: r.emitted_mono)
            if live:
                # A played file is captured on a fixed schedule: frame ``start`` was
                # captured (last_frame - start) / fps before the read's last frame.
                captured = first.last_capture_mono - (first.last_frame - start) / fps
                delays.append(max(0.0, first.emitted_mono - captured) * 1e3)
            else:
                delays.append(max(0, first.last_frame - start) * 1e3 / fps)
        delays.sort()
        if samples:
            out[f"{width}px"] = delays
            continue
        out[f"{width}px"] = {
            "passes": len(delays),
            "p50": round(float(np.percentile(delays, 50)), 1) if delays else None,
            "p95": round(float(np.percentile(delays, 95)), 1) if delays else None,
        }
    return out
