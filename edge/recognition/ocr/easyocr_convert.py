"""EasyOCR's ``english_g2`` recogniser converted to ONNX without PyTorch (run by
``lpr-edge models fetch``, never at run time).

``english_g2`` is a small CRNN (VGG-style convolutions, two bidirectional LSTMs, a
linear layer over 96 characters plus the CTC blank). Its weights ship as a PyTorch
``.pth`` file, which is a zip holding a pickle of the state dict and one raw file
per tensor storage. :func:`load_state_dict` reads that with a pickle unpickler that
only knows how to rebuild tensors as numpy arrays, so converting needs neither
PyTorch nor arbitrary code execution; :func:`convert_english_g2` then writes the
same network with ONNX operators.
"""

from __future__ import annotations

import collections
import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.recognition.ocr.easyocr_onnx import CHARACTERS, HEIGHT

_OPSET = 17
_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default; the checkpoint does not record it
_HIDDEN = 256

# torch storage class -> numpy dtype. Storages are little-endian unless the
# checkpoint's ``byteorder`` record says otherwise (then loading refuses).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# --------------------------------------------------------------------------- reading


class _StorageRef:
    __slots__ = ("dtype", "key")

    def __init__(self, key: str, dtype: np.dtype) -> None:
        self.key = key
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into placeholders, refusing any other global.

    A ``.pth`` pickle may name any importable callable; allowing only the handful a
    state dict needs means a tampered model file cannot run code here.
    """

    _GLOBALS: ClassVar[dict[tuple[str, str], object]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel); the location (e.g.
        # 'cuda:0') is irrelevant because everything becomes a host array.
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype = pid[1]
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"unsupported storage type {dtype!r}")
        return _StorageRef(str(pid[2]), dtype)


def load_state_dict(pth_path: Path) -> dict[str, np.ndarray]:
    """Read a zip-format PyTorch state dict as ``{name: numpy array}`` without torch."""
    with zipfile.ZipFile(pth_path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{pth_path}: not a zip-format PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise ValueError(f"{pth_path}: big-endian checkpoints are not supported")
        with zf.open(pkl[0]) as fh:
            raw = _StateDictUnpickler(fh).load()
        if not isinstance(raw, dict):
            raise ValueError(f"{pth_path}: expected a state dict, got {type(raw).__name__}")
        storages: dict[str, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for name, value in raw.items():
            if not (isinstance(value, tuple) and value and value[0] == "tensor"):
                raise ValueError(f"{pth_path}: entry {name!r} is not a tensor")
            _, ref, offset, size, stride = value
            if ref.key not in storages:
                data = zf.read(f"{prefix}data/{ref.key}")
                storages[ref.key] = np.frombuffer(data, dtype=ref.dtype)
            flat = storages[ref.key]
            item = flat.itemsize
            needed = offset + 1 + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
            if size and min(size) > 0 and needed > flat.size:
                raise ValueError(f"{pth_path}: tensor {name!r} runs past its storage")
            arr = np.lib.stride_tricks.as_strided(
                flat[offset:],
                shape=size,
                strides=tuple(st * item for st in stride),
                writeable=False,
            )
            out[str(name)] = np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True)
    return out


# --------------------------------------------------------------------------- converting


class _Graph:
    """Collects nodes and initialisers with predictable names, so output is repeatable."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> list[str]:
        self._n += 1
        outs = [
            f"{op_type.lower()}_{self._n}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)
        ]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outs, name=f"{op_type}_{self._n}", **attrs)
        )
        return outs


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _lstm_weights(sd: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, ...]:
    """Stack one bidirectional torch LSTM's weights in ONNX's layout and gate order."""

    def gates(a: np.ndarray) -> np.ndarray:
        # torch packs gates as input, forget, cell, output; ONNX as input, output,
        # forget, cell.
        i, f, g, o = np.split(a, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    w, r, b = [], [], []
    for suffix in ("", "_reverse"):
        w.append(gates(sd[f"{prefix}.weight_ih_l0{suffix}"]))
        r.append(gates(sd[f"{prefix}.weight_hh_l0{suffix}"]))
        # ONNX wants the input and recurrent biases side by side in one vector.
        bias_ih = gates(sd[f"{prefix}.bias_ih_l0{suffix}"])
        bias_hh = gates(sd[f"{prefix}.bias_hh_l0{suffix}"])
        b.append(np.concatenate([bias_ih, bias_hh]))
    return _f32(np.stack(w)), _f32(np.stack(r)), _f32(np.stack(b))


def build_english_g2(state_dict: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The english_g2 network as an ONNX model.

    Input ``image``: float32 ``(N, 1, 64, W)``, grey levels scaled to [-1, 1].
    Output ``probs``: float32 ``(N, T, 97)`` softmax over blank + :data:`CHARACTERS`,
    with ``T = W // 4 - 1``.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    n_class = len(CHARACTERS) + 1
    if sd.get("Prediction.weight", np.zeros(0)).shape != (n_class, _HIDDEN):
        raise ValueError("weights are not an english_g2 recogniser (Prediction layer shape)")

    g = _Graph()
    x = "image"
    conv = "FeatureExtraction.ConvNet"
    # (conv index, batch-norm index or None, kernel, max-pool after it)
    layers = [
        (0, None, 3, (2, 2)),
        (3, None, 3, (2, 2)),
        (6, None, 3, None),
        (8, None, 3, (2, 1)),
        (11, 12, 3, None),
        (14, 15, 3, (2, 1)),
        (18, None, 2, None),
    ]
    for idx, bn, k, pool in layers:
        w = sd[f"{conv}.{idx}.weight"].astype(np.float64)
        b = sd.get(f"{conv}.{idx}.bias")
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        if bn is not None:
            # Inference-time batch norm is an affine map per channel; folding it into
            # the convolution leaves one op where there were two.
            gamma = sd[f"{conv}.{bn}.weight"].astype(np.float64)
            beta = sd[f"{conv}.{bn}.bias"].astype(np.float64)
            mean = sd[f"{conv}.{bn}.running_mean"].astype(np.float64)
            var = sd[f"{conv}.{bn}.running_var"].astype(np.float64)
            scale = gamma / np.sqrt(var + _BN_EPS)
            w = w * scale[:, None, None, None]
            b = (b - mean) * scale + beta
        if w.shape[2:] != (k, k):
            raise ValueError(f"unexpected kernel {w.shape} for conv layer {idx}")
        pad = 1 if k == 3 else 0
        (x,) = g.op(
            "Conv",
            [x, g.const(f"conv{idx}.w", _f32(w)), g.const(f"conv{idx}.b", _f32(b))],
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[1, 1],
        )
        (x,) = g.op("Relu", [x])
        if pool is not None:
            (x,) = g.op("MaxPool", [x], kernel_shape=list(pool), strides=list(pool))

    # (N, C, H', T): AdaptiveAvgPool2d((None, 1)) over the permuted tensor is a mean
    # over the remaining height.
    (x,) = g.op("ReduceMean", [x], axes=[2], keepdims=0)  # (N, C, T)
    (x,) = g.op("Transpose", [x], perm=[2, 0, 1])  # (T, N, C): ONNX LSTM's layout

    shape_tn2h = g.const("shape_tn2h", np.array([0, 0, 2 * _HIDDEN], dtype=np.int64))
    for i in range(2):
        w, r, b = _lstm_weights(sd, f"SequenceModeling.{i}.rnn")
        y, _, _ = g.op(
            "LSTM",
            [x, g.const(f"lstm{i}.W", w), g.const(f"lstm{i}.R", r), g.const(f"lstm{i}.B", b)],
            n_out=3,
            direction="bidirectional",
            hidden_size=_HIDDEN,
        )
        # Y is (T, 2, N, H); torch concatenates forward then backward on the last axis.
        (y,) = g.op("Transpose", [y], perm=[0, 2, 1, 3])
        (y,) = g.op("Reshape", [y, shape_tn2h])
        lw = sd[f"SequenceModeling.{i}.linear.weight"]
        lb = sd[f"SequenceModeling.{i}.linear.bias"]
        (y,) = g.op("MatMul", [y, g.const(f"linear{i}.w", _f32(lw.T))])
        (x,) = g.op("Add", [y, g.const(f"linear{i}.b", _f32(lb))])

    (x,) = g.op("MatMul", [x, g.const("pred.w", _f32(sd["Prediction.weight"].T))])
    (x,) = g.op("Add", [x, g.const("pred.b", _f32(sd["Prediction.bias"]))])
    (x,) = g.op("Transpose", [x], perm=[1, 0, 2])  # (N, T, classes)
    g.nodes.append(helper.make_node("Softmax", [x], ["probs"], name="Softmax_out", axis=-1))

    graph = helper.make_graph(
        g.nodes,
        "easyocr_english_g2",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, HEIGHT, "W"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "T", n_class])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="lpr-edge",
        producer_version="1",
    )
    model.ir_version = 8  # readable by every onnxruntime the project supports (>= 1.17)
    helper.set_model_props(
        model,
        {
            "charset": json.dumps(["", *CHARACTERS], ensure_ascii=False),
            "blank": "0",
            "input_height": str(HEIGHT),
            "source": "easyocr english_g2",
        },
    )
    onnx.checker.check_model(model)
    return model


def convert_english_g2(pth_path: Path, onnx_path: Path) -> None:
    """Convert EasyOCR's ``english_g2.pth`` to ONNX, byte-for-byte repeatably.

    Needs only numpy and onnx. The file is written beside its final name and
    renamed into place, so a reader never sees half a model.
    """
    model = build_english_g2(load_state_dict(Path(pth_path)))
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(onnx_path.name + ".part")
    tmp.write_bytes(model.SerializeToString(deterministic=True))
    tmp.replace(onnx_path)
