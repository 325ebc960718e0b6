"""`lpr-edge bench calibrate`: fit the reads' confidence calibration on clips made
from real labelled photos, and write the table (``edge/data/confidence_calibration.json``
is made this way; see :mod:`edge.tracking.calibration`).

Each folder's photos become the two cameras' clips of `bench video --photos`; both
are replayed frame by frame with no calibration (a read's confidence is then its
evidence score) and no withholding; every read that went out (corrections and the
reads they overturned included, other labelled plates left out) is a sample: its
score, and whether it read the pass's plate. Fit on the US and European photos; the
Hong Kong photos then measure the table (`bench video --photos hk-dev`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from edge.bench.passes import pass_outcomes, reliability
from edge.bench.photoclips import PhotoClipSpec, photo_clips
from edge.config import Config, load_config
from edge.errors import UsageError
from edge.recognition.recognize import open_recognizer
from edge.tracking.calibration import ConfidenceCalibration, fit_isotonic
from edge.tracking.pipeline import FramePipeline
from edge.types import PlateRead
from edge.vehicle.replay import replay_file


def collect_samples(config: Config, folder: Path, plate_format: str) -> list[tuple[float, bool]]:
    """(evidence score, right) for every read of ``folder``'s photo clips."""
    config = dataclasses.replace(
        config,
        recognition=dataclasses.replace(config.recognition, plate_format=plate_format),
        tracking=dataclasses.replace(config.tracking, min_read_confidence=0.0),
    )
    clips, problems = photo_clips(folder, PhotoClipSpec(), config.state_dir / "bench")
    for problem in problems:
        print(f"lpr-edge bench calibrate: skipped: {problem}", file=sys.stderr)
    samples: list[tuple[float, bool]] = []
    with open_recognizer(config) as recognizer:
        for path, truth in clips:
            reads: list[PlateRead] = []
            pipeline = FramePipeline(
                recognizer, config.tracking, calibration=ConfidenceCalibration.identity()
            )
            replay_file(pipeline, path, "front-left", on_read=reads.append)
            for outcome in pass_outcomes(truth, reads):
                for read in (*outcome.reads, *outcome.overturned):
                    if read.plate not in outcome.fine:
                        samples.append((read.confidence, read.plate == outcome.truth.text))
    return samples


def cmd_bench_calibrate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sets: list[tuple[Path, str]] = []
    for given in args.photos:
        folder, sep, fmt = given.rpartition(":")
        if not sep or not folder or not fmt:
            raise UsageError(f"--photos expected DIR:FORMAT (e.g. data/us:us), got {given!r}")
        if not Path(folder).is_dir():
            raise UsageError(f"--photos {folder}: not a folder")
        sets.append((Path(folder), fmt))
    samples: list[tuple[float, bool]] = []
    counts = []
    for folder, fmt in sets:
        found = collect_samples(config, folder, fmt)
        counts.append(
            f"{folder.name} ({fmt}): {len(found)} reads, {sum(r for _, r in found)} right"
        )
        samples += found
    table = ConfidenceCalibration(
        fit_isotonic(samples, min_reads=args.min_reads),
        "bench calibrate on photo clips of " + "; ".join(counts),
    )
    Path(args.out).write_text(table.to_json())
    report = {
        "fitted_on": table.fitted_on,
        "points": table.points,
        "before": reliability_of(samples, ConfidenceCalibration.identity()),
        "after": reliability_of(samples, table),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(table.fitted_on)
        print(
            "evidence score -> share right: "
            + ", ".join(f"{x:.3f}->{y:.3f}" for x, y in table.points)
        )
        for name in ("before", "after"):
            print(f"reliability {name} (band, reads, right, share):")
            for row in report[name]:
                band, n, right = row["band"], row["reads"], row["right"]
                print(f"  {band:<12} {n:>5} {right:>5} {row['share_right']:>6.3f}")
        print(f"written to {args.out}")
    return 0


def reliability_of(samples: list[tuple[float, bool]], table: ConfidenceCalibration) -> list[dict]:
    """The reliability table of ``samples`` with their scores mapped by ``table``."""
    return reliability([(table(score), right) for score, right in samples])
