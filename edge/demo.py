"""Sample input for `make demo`: generated Hong Kong-style plate scenes.

Writes a few scenes (front plates white, rear plates yellow) and their ground truth to
a folder; the Makefile then runs the real pipeline over them. Generated, so the demo
needs no camera, broker or outside data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.synth import random_hk_plate, render_scene


def write_samples(folder: Path, *, count: int = 4, seed: int = 2026) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = []
    for i in range(count):
        texts = [random_hk_plate(rng) for _ in range(1 + i % 2)]
        styles = ["front" if (i + j) % 2 == 0 else "rear" for j in range(len(texts))]
        image, plates = render_scene(texts, rng=rng, styles=styles)
        path = folder / f"sample-{i + 1}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth.append({"image": str(path), "plates": [text for text, _ in plates]})
    (folder / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "demo-out")
    for item in write_samples(folder):
        print(f"generated {item['image']}: plates {', '.join(item['plates'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
