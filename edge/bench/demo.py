"""Sample input for `make demo`: generated Hong Kong-style plate scenes and a dashcam clip.

Writes a few still scenes (generated HK plates in real typefaces: one and two rows,
front plates white, rear plates yellow), a short dashcam-like clip of passing cars
with the same kind of plates, and their ground truth to a folder; the Makefile then
runs the real pipeline over them (`recognize` on the stills, `replay` on the clip),
and the report ends by serving the in-car console over the replay's hits for a
while (``--report FOLDER [SECONDS]``; ``--console FOLDER`` serves it until Ctrl-C).
Generated, so the demo needs no camera, broker or outside data.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.config import load_config
from edge.delivery.messages import HIT_SCHEMA
from edge.delivery.outbox import Outbox
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec, ClipTruth
from edge.synth.hkplates import HkPlate, render_hk_scene
from edge.vehicle.console import serve_state_console
from edge.vehicle.state import OUTBOX_FILE

#: The demo's still scenes: one-row and two-row plates, white front and yellow rear,
#: a personalised mark, the three typefaces of the generated HK plates.
SAMPLE_CARS = (
    (HkPlate("AB1234", style="front"),),
    (HkPlate("KT88", rows=2, style="rear"), HkPlate("L0VEBB", style="rear")),
    (HkPlate("PX5170", style="rear", typeface="sans"),),
    (HkPlate("GR8", style="front", typeface="mono"), HkPlate("UV288", rows=2, style="rear")),
)


def write_samples(folder: Path, *, seed: int = 7) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = []
    for i, cars in enumerate(SAMPLE_CARS):
        image, plates = render_hk_scene(cars, rng=rng, wear=0.3)
        path = folder / f"sample-{i + 1}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth.append({"image": str(path), "plates": [p.text for p in plates]})
    (folder / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def write_clip(folder: Path, *, seconds: float = 8.0, seed: int = 2026) -> ClipTruth:
    path = folder / "dashcam.mp4"
    truth = render_clip(path, ClipSpec(size=(1280, 720), seconds=seconds, seed=seed))
    plates = ", ".join(f"{p.text} ({p.style})" for p in truth.passes)
    print(f"generated {path}: {truth.frame_count} frames at {truth.fps:g} fps; passes {plates}")
    return truth


def write_watchlist(folder: Path, truth: ClipTruth) -> Path:
    """A watchlist naming two of the clip's plates (one in full, one as a partial
    plate), and a config that uses it with a state directory inside ``folder``."""
    first, second = truth.passes[0].text, truth.passes[-1].text
    rows = [
        "plate,list,priority,reason,covert,entry_id",
        f"{first},stolen-vehicle,2,demo: reported stolen,false,demo-1",
        f"{second[:3]}*,wanted-person,1,demo: partial plate from a witness,false,demo-2",
        "ZZ9999,missing-person,3,demo: not in the clip,false,demo-3",
    ]
    (folder / "watchlist.csv").write_text("\n".join(rows) + "\n")
    config = folder / "edge.toml"
    config.write_text(
        "# Written by `make demo`: no broker, so hits stay in the outbox and are printed.\n"
        '[vehicle]\nid = "demo-car"\n\n[watchlist]\npath = "watchlist.csv"\n\n'
        '[storage]\nstate_dir = "state"\n\n[privacy]\ncontext_image = "blurred"\n\n'
        "# The report step serves the console over the replay's hits (the token is made\n"
        "# in state/console.token); enabled = true would serve it during a replay too.\n"
        '[console]\nlisten = "127.0.0.1"\nport = 8780\nofficer = "demo officer"\n'
    )
    # A fresh outbox each time: the demo's report counts this run's hits.
    shutil.rmtree(folder / "state", ignore_errors=True)
    print(f"generated {folder / 'watchlist.csv'}: {first} (stolen), {second[:3]}* (wanted)")
    return config


def report_reads(folder: Path) -> int:
    """Compare the replay's reads of the demo clip with its ground truth."""
    truth = ClipTruth.load(folder / "dashcam.json")
    reads = [json.loads(line) for line in (folder / "reads.jsonl").read_text().splitlines()]
    by_plate = {r["plate"]: r for r in reads}
    for p in truth.passes:
        read = by_plate.get(p.text)
        if read:
            print(
                f"  {p.text:<8} read in frames {read['first_frame']}-{read['last_frame']} "
                f"(pass {p.first_frame}-{p.last_frame}), confidence {read['confidence']:.2f}"
            )
        else:
            print(f"  {p.text:<8} not read (pass {p.first_frame}-{p.last_frame})")
    # A cross-boundary plate under a passing plate is fine to read, but not a pass.
    crossboundary = [r["plate"] for r in reads if r["plate"] in truth.fine_to_read]
    if crossboundary:
        print(f"  cross-boundary plates read: {', '.join(crossboundary)}")
    expected = {p.text for p in truth.passes} | set(truth.fine_to_read)
    others = [r["plate"] for r in reads if r["plate"] not in expected]
    found = sum(1 for p in truth.passes if p.text in by_plate)
    print(f"{found} of {len(truth.passes)} passes read exactly; other reads: {others or 'none'}")
    report_hits(folder)
    return 0


def report_hits(folder: Path) -> None:
    """The watchlist hits the demo's outbox holds (none is sent: no broker)."""
    outbox = folder / "state" / OUTBOX_FILE
    if not outbox.exists():
        return
    with Outbox(outbox) as box:
        kept = [json.loads(m.payload) for m in box.pending(1000) if m.kind == "hit"]
    # Outbox kind "hit" holds what retention treats as a hit's: its withdrawal and the
    # officers' decisions on it too. Only hit messages are hits.
    hits = [m for m in kept if isinstance(m, dict) and m.get("schema") == HIT_SCHEMA]
    print(f"{len(hits)} watchlist hit(s) kept in {outbox} (no broker in the demo):")
    for hit in hits:
        w = hit["watchlist"]
        print(
            f"  {hit['plate']:<8} {w['list']} priority {w['priority']}, "
            f"{w['match']} match of {w['entry_plate']} (entry {w['entry_id']})"
        )


#: How long the report step serves the in-car console unless told (make demo must end
#: by itself; `--console FOLDER` serves it again until Ctrl-C).
CONSOLE_SECONDS = 30.0


def serve_console(folder: Path, seconds: float | None) -> int:
    """The in-car console over the demo's hits, on loopback."""
    config = load_config(folder / "edge.toml")
    if seconds is not None and seconds <= 0:
        print(
            f"In-car console with these hits: {sys.executable} -m edge.bench.demo "
            f"--console {folder}"
        )
        return 0
    code = serve_state_console(config, seconds=seconds)
    print(f"Serve it again with: {sys.executable} -m edge.bench.demo --console {folder}")
    return code


def main(argv: list[str]) -> int:
    if argv[:1] == ["--report"]:
        folder = Path(argv[1] if len(argv) > 1 else "demo-out")
        seconds = float(argv[2]) if len(argv) > 2 else CONSOLE_SECONDS
        report_reads(folder)
        return serve_console(folder, seconds)
    if argv[:1] == ["--console"]:
        return serve_console(Path(argv[1] if len(argv) > 1 else "demo-out"), None)
    folder = Path(argv[0] if argv else "demo-out")
    for item in write_samples(folder):
        print(f"generated {item['image']}: plates {', '.join(item['plates'])}")
    write_watchlist(folder, write_clip(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
