"""An INT8 plate detector derived from the float16 dynamic model.

:func:`make_int8_detector` is a manifest converter, so the file it writes must hash
the same on every run. It calibrates on generated scenes (fixed seeds, no outside
data) in a single-threaded session and snaps every activation range outwards to a
coarse grid of exactly representable values before onnxruntime's QDQ quantizer
turns the ranges into scales. Small differences then do not reach the scales:
calibrating with onnxruntime's fused kernels instead (207 of 235 ranges moved, by
1e-7 relative at the median), or with 5% of the pixels one grey level off (227
moved, by 5e-4), left every snapped range, and so the bytes, as they were.

Measured choices (real photos and generated scenes, against the float16 model):

* each scene's 0.001st and 99.999th percentiles, then the median over scenes: the
  minimum and maximum over all scenes widen as scenes are added (going from 32 to
  64 moved the scores by half a logit); a 99.9th percentile clipped and lowered
  them, a 99.99th was no better than the 99.999th;
* in float: the stem convolution, which sees raw pixels and alone cut the score
  error by a third to a half, plus the head's last convolutions and the box/score
  decoding, where a plate is by nature the outlier a percentile would clip
  (quantising the score logits cost a full logit);
* 7-bit weights (``reduce_range``): as accurate here, and without VNNI the u8 x s8
  kernels add pairs of products in 16 bits, which 8-bit weights can saturate and
  7-bit ones cannot, so the integer sums are exact on any x86 CPU.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edge.recognition.detect import DEFAULT_INPUT_SIZE, fit_input_shape, letterbox
from edge.synth.scenes import random_hk_plate, render_scene

CALIBRATION_SEED = 20240611
CALIBRATION_SCENES = 32
# Camera frames the car sees (16:9) and still photos (4:3), as (width, height).
CALIBRATION_FRAMES = ((1920, 1080), (1280, 720), (640, 480), (1024, 768))
# Share of each scene's activations left outside its range, at either end.
TAIL_FRACTION = 1e-5
# Mantissa steps per octave when snapping a range: a range grows by at most 1/8,
# and a relative wobble of 1e-6 crosses a grid point with odds of about 1e-5.
RANGE_GRID = 16
METADATA_KEY = "lpr_edge.quantization"


# --- calibration data -------------------------------------------------------------


def calibration_scene(index: int) -> np.ndarray:
    """Generated scene number ``index`` (BGR). Each has its own seed, so a scene
    does not depend on how many were made before it."""
    rng = np.random.default_rng([CALIBRATION_SEED, index])
    size = CALIBRATION_FRAMES[index % len(CALIBRATION_FRAMES)]
    # Every eighth scene is an empty road: most camera frames hold no plate.
    n_plates = 0 if index % 8 == 7 else int(rng.integers(1, 4))
    small = bool(rng.integers(2))
    image, _ = render_scene(
        [random_hk_plate(rng) for _ in range(n_plates)],
        size=size,
        rng=rng,
        blur=float(rng.uniform(0.0, 1.5)),
        noise=float(rng.uniform(0.0, 8.0)),
        plate_frac=(0.03, 0.08) if small else (0.08, 0.25),
    )
    return image


def calibration_inputs(
    count: int = CALIBRATION_SCENES, longest: int = DEFAULT_INPUT_SIZE
) -> Iterator[np.ndarray]:
    """Network inputs (1, 3, H, W) float32, letterboxed as the detector does it."""
    for index in range(count):
        image = calibration_scene(index)
        # One-step downscale, as when the manifest's hash was taken: the model's bytes
        # must not change with the detector's faster run-time downscale.
        tensor, _, _ = letterbox(image, fit_input_shape(image.shape[:2], longest), one_step=True)
        yield tensor


# --- graph surgery ----------------------------------------------------------------


def float16_to_float32(model):
    """The same network computing in float32, which the quantizer expects. Casts
    from a float type to a float type are dropped, other casts to float16 cast to
    float32. Changes ``model`` in place and returns it."""
    import onnx
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.input, *inferred.value_info, *inferred.output)
    }
    types.update((init.name, init.data_type) for init in graph.initializer)
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            array = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    float_types = {TensorProto.FLOAT, TensorProto.FLOAT16}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        source_type = types.get(node.input[0]) if node.input else None
        inputs = [alias.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i in float_types and source_type in float_types:
                alias[node.output[0]] = node.input[0]
                continue
            if to.i == TensorProto.FLOAT16:
                to.i = TensorProto.FLOAT
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT16:
                    array = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        kept.append(node)
    if any(out.name in alias for out in graph.output):
        raise ValueError("a graph output comes straight from a Cast; not supported")
    del graph.node[:]
    graph.node.extend(kept)
    del graph.value_info[:]
    return model


def float_nodes(graph) -> list[str]:
    """Nodes to leave in float (see the module notes): the stem convolution and its
    activation, and everything from the head's last convolutions to the outputs."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    stems = [n for n in consumers.get(graph.input[0].name, []) if n.op_type == "Conv"]
    if len(stems) != 1:
        raise ValueError("expected exactly one convolution on the model input")
    # SiLU is Sigmoid(x) and Mul(x, Sigmoid(x)): both consume the convolution.
    keep = {stems[0].name}
    keep.update(n.name for n in consumers.get(stems[0].output[0], []))

    # Walk back from the outputs; a Conv fed by the DFL softmax is the fixed
    # decoding convolution, any other Conv is a learned one that ends the walk.
    head: set[str] = set()
    stack = [producers[out.name] for out in graph.output if out.name in producers]
    learned = 0
    while stack:
        node = stack.pop()
        if node.name in head:
            continue
        head.add(node.name)
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type == "Conv" and (source is None or source.op_type != "Softmax"):
            learned += 1
            continue
        stack.extend(producers[name] for name in node.input if name in producers)
    if not learned:
        raise ValueError("could not find the detection head's last convolutions")
    return sorted(keep | head)


# --- activation ranges ------------------------------------------------------------


def activation_names(model) -> list[str]:
    """Float tensors computed by the graph, and its input: the ones to calibrate."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
    }
    names = [v.name for v in model.graph.input]
    names += [out for node in model.graph.node for out in node.output if out]
    return [n for n in dict.fromkeys(names) if types.get(n) == TensorProto.FLOAT]


def kth_smallest(values: np.ndarray, k: int) -> float:
    """The ``k``-th smallest (0-based) of a flat array.

    Exact, but mostly without partitioning the whole array: a strided sample gives
    a cut with comfortably more than k values below it, and only those are
    partitioned (ten times faster on a full-resolution activation).
    """
    step = 64
    sample = np.sort(values[::step])
    cut = sample[min(sample.size - 1, 2 * (k // step) + 8)]
    below = values[values <= cut]
    if below.size <= k:
        below = values
    return float(np.partition(below, k)[k])


def scene_range(values: np.ndarray) -> tuple[float, float]:
    """One scene's range of a tensor, TAIL_FRACTION of it left out at each end."""
    flat = values.ravel()
    k = int(flat.size * TAIL_FRACTION)
    if k == 0:
        return float(flat.min()), float(flat.max())
    return kth_smallest(flat, k), -kth_smallest(-flat, k)


def activation_ranges(model, inputs: Iterable[np.ndarray]) -> dict[str, tuple[float, float]]:
    """Each activation's range: the median over the inputs of its per-input range.

    One intra-op thread, so kernels always reduce in the same order.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = activation_names(model)
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {out.name for out in augmented.graph.output}
    augmented.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in present
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        augmented.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    per_input: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for tensor in inputs:
        for name, value in zip(names, session.run(names, {input_name: tensor}), strict=True):
            per_input[name].append(scene_range(value))
    ranges = {n: tuple(float(v) for v in np.median(per_input[n], axis=0)) for n in names}
    # Pixels are 0..1 by construction; no sample of scenes should say otherwise.
    ranges[input_name] = (0.0, 1.0)
    return ranges


def snap_outwards(value: float, away_from_zero: bool) -> float:
    """``value`` moved to the nearest number with a log2(RANGE_GRID)-bit binary
    mantissa, away from or towards zero. Exact in float32, so no later rounding
    depends on the platform."""
    if value == 0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(abs(value))
    steps = mantissa * RANGE_GRID
    steps = math.ceil(steps) if away_from_zero else math.floor(steps)
    return math.copysign(math.ldexp(steps / RANGE_GRID, exponent), value)


def snap_range(low: float, high: float) -> tuple[float, float]:
    """The smallest range on the grid that contains [low, high] and zero.

    The quantizer widens every range to hold zero anyway (zero must be exact);
    doing it first keeps, say, a sigmoid's 2e-7 floor from ever reaching the grid.
    """
    return snap_outwards(min(low, 0.0), True), snap_outwards(max(high, 0.0), True)


# --- quantisation -----------------------------------------------------------------


def quantize_with_ranges(
    model,
    ranges: dict[str, tuple[float, float]],
    dst: Path,
    *,
    keep_float: Iterable[str] = (),
    reduce_range: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """QDQ-quantise a float32 ``model`` with the given activation ranges: uint8
    activations, int8 per-channel weights. Writes ``dst``."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(low), highest=np.float32(high))
            for name, (low, high) in ranges.items()
        },
    )
    with tempfile.TemporaryDirectory(prefix="lpr-edge-quant-") as tmp:
        path = Path(tmp) / "float32.onnx"
        onnx.save(model, str(path))
        shaped = load_model_with_shape_infer(path)
    quantizer = QDQQuantizer(
        shaped,
        True,  # per-channel weights
        reduce_range,
        QuantType.QInt8,
        QuantType.QUInt8,
        tensors,
        [],  # nodes to quantize: all
        sorted(keep_float),
        sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),
        {},
    )
    quantized = quantizer.quantize_model()
    for key, value in (metadata or {}).items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(dst))
    return dst


def make_int8_detector(src: Path, dst: Path) -> Path:
    """Derive the INT8 detector from ``platedet-dynamic`` (float16) at ``src``;
    write it to ``dst``. Same inputs and library versions, same bytes."""
    import onnx

    model = float16_to_float32(onnx.load(str(src)))
    ranges = activation_ranges(model, calibration_inputs())
    snapped = {name: snap_range(low, high) for name, (low, high) in ranges.items()}
    note = (
        f"QDQ uint8/int8 (7-bit per-channel weights); ranges from {CALIBRATION_SCENES} "
        f"generated scenes (seed {CALIBRATION_SEED}), per-scene {1 - TAIL_FRACTION:.3%} "
        f"range, median over scenes, snapped to {RANGE_GRID} steps per octave; "
        "float: stem, last head convolutions, box/score decoding"
    )
    return quantize_with_ranges(
        model,
        snapped,
        dst,
        keep_float=float_nodes(model.graph),
        reduce_range=True,
        metadata={METADATA_KEY: note},
    )
