"""Generated dashcam clips drawn and written, for tests, the demo and benchmarks.

:func:`render_clip` writes the video and a JSON ground truth next to it;
:class:`ClipRenderer` yields the frames without a codec. Each car of the plan
(:mod:`edge.synth.clipplan`) is drawn with its plates, made by
:mod:`edge.synth.hkplates` in real typefaces, with motion blur along its image
velocity, lens blur and sensor grain.

``python -m edge.synth.clips OUT.mp4 [--seconds N --size 1920x1080 --fps 30 --seed S]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.synth.clipplan import NOISE_PAD, _background_margin, _Pass, _plan
from edge.synth.clipspec import CODECS, PLATE_STYLES, ClipSpec, ClipTruth
from edge.synth.hkplates import (
    render_hk_plate,
)
from edge.synth.scenes import UNIFORM_BYTE_STD, _background, _scaled_quad, _shade, draw_car_body


def _line_kernel(dx: float, dy: float) -> np.ndarray:
    """A normalised kernel spreading a point along the segment (dx, dy) (motion blur)."""
    kw = 2 * math.ceil(abs(dx) / 2) + 1
    kh = 2 * math.ceil(abs(dy) / 2) + 1
    kernel = np.zeros((kh, kw), np.float32)
    n = math.ceil(4 * math.hypot(dx, dy)) + 2
    s = np.linspace(-0.5, 0.5, n)
    xs, ys = kw // 2 + s * dx, kh // 2 + s * dy
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    # Bilinear splats keep a sub-pixel length's share where it belongs.
    for ox, oy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = np.clip(x0 + ox, 0, kw - 1), np.clip(y0 + oy, 0, kh - 1)
        np.add.at(kernel, (yi, xi), wgt)
    return kernel / kernel.sum()


class ClipRenderer:
    """Frames of the clip ``spec`` describes (BGR uint8), one at a time or in order.

    The road is drawn once; each frame is a crop of it with the cars drawn into their
    own regions, so a frame costs little more than its copy and its grain.
    """

    def __init__(self, spec: ClipSpec):
        self.spec = spec
        self._plan = _plan(spec)
        self.truth = self._plan.truth
        w, h = spec.size
        self._margin = _background_margin(spec.size)
        road = _background(
            (w + 2 * self._margin, h + 2 * self._margin),
            np.random.default_rng(self._plan.background_seed),
        )
        self._sigma = spec.blur
        if self._sigma > 0:
            road = cv2.GaussianBlur(road, (0, 0), self._sigma)
        self._road = road
        self._grain_k = spec.noise / UNIFORM_BYTE_STD
        # One pool of grain, read at a different offset each frame: as random to the
        # eye and to the detector as fresh draws, at the cost of a slice.
        self._grain = (
            np.random.default_rng(self._plan.noise_seed).integers(
                0, 256, (h + NOISE_PAD, w + NOISE_PAD, 3), dtype=np.uint8
            )
            if self._grain_k > 0
            else None
        )
        # Each pass's plates drawn once, as wide as they get in the pass; every frame
        # shrinks them to its size, which is far cheaper than drawing text again.
        self._plate_images: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return self.truth.frame_count

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i)

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the clip (0..{len(self) - 1})")
        w, h = self.spec.size
        plan = self._plan
        sx, sy = plan.shake[index]
        ox = int(np.clip(self._margin + plan.drift[index] - sx, 0, 2 * self._margin))
        oy = int(np.clip(self._margin - sy, 0, 2 * self._margin))
        img = self._road[oy : oy + h, ox : ox + w].copy()
        active = [(i, p) for i, p in enumerate(plan.passes) if p.start <= index <= p.end]
        # Far cars first, though the planner keeps cars apart anyway.
        active.sort(key=lambda item: float(item[1].unit[index - item[1].start, 0]))
        for i, p in active:
            self._draw(img, p, index - p.start, self._images(i, p))
        if self._grain is not None:
            gx, gy = plan.noise_offsets[index]
            grain = self._grain[gy : gy + h, gx : gx + w]
            k = self._grain_k
            img = cv2.addWeighted(img, 1.0, grain, k, -127.5 * k, dtype=cv2.CV_8U)
        return img

    def _images(self, index: int, p: _Pass) -> list[np.ndarray]:
        """The pass's plates (Hong Kong plate first) at the largest size they show."""
        images = self._plate_images.get(index)
        if images is None:
            if len(self._plate_images) > 16:
                self._plate_images.clear()
            images = self._plate_images[index] = _draw_plates(p, self.spec.wear)
        return images

    def _draw(self, img: np.ndarray, p: _Pass, k: int, images: list[np.ndarray]) -> None:
        h, w = img.shape[:2]
        bx, by = (float(v) for v in p.blur[k])
        pad = math.ceil(abs(bx) + abs(by) + 3 * self._sigma) + 3
        cx0, cy0, cx1, cy1 = p.car_boxes[k]
        x0, y0 = max(0, math.floor(cx0) - pad), max(0, math.floor(cy0) - pad)
        x1, y1 = min(w, math.ceil(cx1) + pad), min(h, math.ceil(cy1) + pad)
        if x1 <= x0 or y1 <= y0:
            return
        under = img[y0:y1, x0:x1]
        layer = under.copy()
        local = p.corners[k] - [x0, y0]
        # A fresh generator on the pass's seed: the same car, frame after frame.
        _draw_car(layer, local, p.unit[k], np.random.default_rng(p.car_seed))
        pasted = [
            _paste_plate(layer, image, quad) for image, quad in zip(images, local, strict=True)
        ]
        shown = np.array([b for b in pasted if b is not None]).reshape(-1, 4)
        plate_box = None
        if len(shown):
            plate_box = (*shown[:, :2].min(axis=0).tolist(), *shown[:, 2:].max(axis=0).tolist())

        diff = cv2.absdiff(layer, under)
        alpha = ((diff[:, :, 0] | diff[:, :, 1] | diff[:, :, 2]) > 0).astype(np.float32)
        blurred = layer
        box = (max(1, round(abs(bx))), max(1, round(abs(by))))
        if box != (1, 1):
            # A box filter is the smear of the flat car body; the plates themselves get
            # the exact directional kernel below.
            blurred = cv2.blur(layer, box)
            alpha = cv2.blur(alpha, box)
        if self._sigma > 0:
            blurred = cv2.GaussianBlur(blurred, (0, 0), self._sigma)
            alpha = cv2.GaussianBlur(alpha, (0, 0), self._sigma)
        if plate_box is not None and math.hypot(bx, by) >= 0.5:
            self._blur_plate(layer, blurred, plate_box, bx, by)
        img[y0:y1, x0:x1] = cv2.blendLinear(blurred, under, alpha, 1 - alpha)

    def _blur_plate(
        self,
        layer: np.ndarray,
        blurred: np.ndarray,
        plate_box: tuple[int, int, int, int],
        bx: float,
        by: float,
    ) -> None:
        lh, lw = layer.shape[:2]
        x0, y0, x1, y1 = plate_box
        # The plate and its holder, plus room for the kernels to read from.
        grow_x = round(0.12 * (x1 - x0)) + 2
        grow_y = round(0.35 * (y1 - y0)) + 2
        reach = math.ceil(abs(bx) / 2 + abs(by) / 2 + 3 * self._sigma) + 2
        ix0, iy0 = max(0, x0 - grow_x), max(0, y0 - grow_y)
        ix1, iy1 = min(lw, x1 + grow_x), min(lh, y1 + grow_y)
        ox0, oy0 = max(0, ix0 - reach), max(0, iy0 - reach)
        ox1, oy1 = min(lw, ix1 + reach), min(lh, iy1 + reach)
        sharp = layer[oy0:oy1, ox0:ox1]
        smeared = cv2.filter2D(sharp, -1, _line_kernel(bx, by))
        if self._sigma > 0:
            smeared = cv2.GaussianBlur(smeared, (0, 0), self._sigma)
        blurred[iy0:iy1, ix0:ix1] = smeared[iy0 - oy0 : iy1 - oy0, ix0 - ox0 : ix1 - ox0]


def _draw_car(img: np.ndarray, quads: np.ndarray, unit: np.ndarray, rng) -> None:
    """The back of a car around its plates ``quads`` (k, 4, 2: the Hong Kong plate, then
    any plate under it), sized by ``unit``, the pixel size of a one-row plate there.

    The detector barely fires on a plate floating on a flat blob: it looks for the
    surroundings of a real plate. The recess and the dark holder around the plates,
    the bumper below and the lights and trunk above are what lift its score.
    """
    outline = np.array([quads[0][0], quads[0][1], quads[-1][2], quads[-1][3]])
    (x1, y1), (x2, y2) = outline.min(axis=0), outline.max(axis=0)
    unit_w, unit_h = (float(v) for v in unit)
    colour = draw_car_body(img, (x1 + x2) / 2, y1, y2, unit_w, unit_h, rng)
    # Margins as edge.synth.scenes draws them around a one-row plate (its width and height
    # times 1.16 x 1.55 for the recess, 1.04 x 1.16 for the holder), for any plates.
    span_w, span_h = max(1.0, x2 - x1), max(1.0, y2 - y1)
    for (grow_w, grow_h), fill in (((0.16, 0.55), _shade(colour, 0.55)), ((0.04, 0.16), (20,) * 3)):
        quad = _scaled_quad(outline, 1 + grow_w * unit_w / span_w, 1 + grow_h * unit_h / span_h)
        cv2.fillConvexPoly(img, quad, fill, cv2.LINE_AA)


def _draw_plates(p: _Pass, wear: float) -> list[np.ndarray]:
    """The pass's plates (Hong Kong plate first), each as wide as it gets in the pass,
    drawn by :func:`edge.synth.hkplates.render_hk_plate` with the pass's own variations."""
    plates = p.plates
    rng = np.random.default_rng(plates.seed)
    worn = rng.random() < wear
    widths = np.linalg.norm(p.corners[:, :, 1] - p.corners[:, :, 0], axis=-1).max(axis=0)
    images = []
    for j, width in enumerate(widths):
        text, style, rows = plates.text, plates.colour, plates.rows
        if j:
            text, style, rows = plates.crossboundary, "crossboundary", 1
        images.append(
            render_hk_plate(
                text,
                rows=rows,
                style=style,
                typeface=plates.typeface,
                width=max(40, math.ceil(width)),
                rng=rng,
                screws=worn and rng.random() < 0.6,
                frame=worn and style != "crossboundary" and rng.random() < 0.4,
                dirt=float(rng.uniform(0, 0.3)) if worn else 0.0,
                lighting=float(rng.uniform(0, 0.3)) if worn else 0.0,
            )
        )
    return images


def _paste_plate(
    layer: np.ndarray, image: np.ndarray, quad: np.ndarray
) -> tuple[int, int, int, int] | None:
    """Warp the plate ``image`` onto ``quad`` (4, 2) in ``layer``; the box it covers."""
    lh, lw = layer.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(lw, x1), min(lh, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    width = max(1, round(float(np.linalg.norm(quad[1] - quad[0]))))
    if width < image.shape[1]:
        # Area averaging first: a perspective warp alone would alias a big shrink.
        height = max(1, round(width * image.shape[0] / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ph, pw = image.shape[:2]
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    matrix = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    # Transparent border: only pixels inside the plate are written, straight into
    # the layer; the dark holder _draw_car put around it hides the hard edge.
    cv2.warpPerspective(
        image,
        matrix,
        (x1 - x0, y1 - y0),
        dst=layer[y0:y1, x0:x1],
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return x0, y0, x1, y1


def iter_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """The clip's frames in order, before any codec."""
    yield from ClipRenderer(spec)


def _open_writer(path: Path, spec: ClipSpec) -> cv2.VideoWriter:
    w, h = spec.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*spec.codec), spec.fps, (w, h))
    if not writer.isOpened():
        raise ValueError(
            f"cannot write {spec.codec} video to {path} (expected a {CODECS[spec.codec]} file name)"
        )
    return writer


def check_video(path: str | Path, truth: ClipTruth) -> None:
    """Open the written video and check its frame count, size and rate against the truth,
    and that its first frame decodes; ValueError naming what does not match."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: cannot be opened for reading")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        ok, first = cap.read()
    finally:
        cap.release()
    problems = []
    if (w, h) != tuple(truth.size):
        problems.append(f"size {w}x{h}, expected {truth.size[0]}x{truth.size[1]}")
    if count != truth.frame_count:
        problems.append(f"{count} frames, expected {truth.frame_count}")
    if abs(fps - truth.fps) > 0.01:
        problems.append(f"{fps:g} fps, expected {truth.fps:g}")
    if not ok or first is None or first.shape != (h, w, 3):
        problems.append("the first frame does not decode")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def render_clip(path: str | Path, spec: ClipSpec, *, timings: dict | None = None) -> ClipTruth:
    """Write the clip to ``path`` and its truth to ``path.with_suffix('.json')``.

    The video is read back to check it. ``timings``, when given, receives the
    seconds spent rendering and encoding.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = ClipRenderer(spec)
    truth = renderer.truth
    render_s = encode_s = 0.0
    writer = _open_writer(path, spec)
    try:
        for i in range(len(renderer)):
            t0 = time.perf_counter()
            frame = renderer.frame(i)
            t1 = time.perf_counter()
            writer.write(frame)
            render_s += t1 - t0
            encode_s += time.perf_counter() - t1
    finally:
        writer.release()
    check_video(path, truth)
    path.with_suffix(".json").write_text(truth.to_json())
    if timings is not None:
        timings.update(render_s=render_s, encode_s=encode_s, frames=len(renderer))
    return truth


# --- command line --------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.synth.clips",
        description="Write a generated dashcam clip of passing HK plates and its truth JSON.",
    )
    parser.add_argument("out", type=Path, help="video file (.mp4 for mp4v, .avi MJPG, .mkv FFV1)")
    parser.add_argument("--seconds", type=float, help="clip length (default 10 s)")
    parser.add_argument("--passes", type=int, help="number of passing cars")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codec", choices=sorted(CODECS), default="mp4v")
    parser.add_argument("--blur", type=float, default=ClipSpec.blur, help="lens blur sigma")
    parser.add_argument("--noise", type=float, default=ClipSpec.noise, help="grain std")
    parser.add_argument(
        "--style",
        choices=["mixed", *PLATE_STYLES],
        default=ClipSpec.style,
        help="the plates every car carries (default: the street mix)",
    )
    args = parser.parse_args(argv)
    try:
        spec = ClipSpec(
            size=args.size,
            fps=args.fps,
            seconds=args.seconds,
            seed=args.seed,
            passes=args.passes,
            codec=args.codec,
            blur=args.blur,
            noise=args.noise,
            style=args.style,
        )
        timings: dict = {}
        truth = render_clip(args.out, spec, timings=timings)
    except (ValueError, OSError) as exc:
        print(f"synthclip: {exc}", file=sys.stderr)
        return 2
    fps = truth.fps
    print(
        f"{args.out}: {truth.size[0]}x{truth.size[1]} {fps:g} fps, {truth.frame_count} frames "
        f"({truth.seconds:.1f} s), {len(truth.passes)} pass(es); truth in "
        f"{args.out.with_suffix('.json')}"
    )
    for p in truth.passes:
        legible = p.legible_frames()
        window = (
            f"legible {legible.start}-{legible.stop - 1} ({len(legible) / fps:.2f} s)"
            if legible
            else "never legible"
        )
        plates = f"{p.text} + {p.crossboundary}" if p.crossboundary else p.text
        print(
            f"  {plates:<17} {p.style:<13} {p.kind:<8} frames {p.first_frame}-{p.last_frame}, "
            f"{window}, peak {p.peak_width:.0f} px"
        )
    n = timings["frames"]
    print(
        f"render {timings['render_s'] / n * 1e3:.1f} ms/frame, "
        f"encode {timings['encode_s'] / n * 1e3:.1f} ms/frame"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
