"""Read a TFLite flatbuffer and rebuild its network in torch, for exactly the ops MediaPipe's landmark
models use (PAD, DEQUANTIZE, CONV_2D, DEPTHWISE_CONV_2D, ADD, RESIZE_BILINEAR, MAX_POOL_2D, RESHAPE,
LOGISTIC, MEAN, FULLY_CONNECTED, PRELU).

The flatbuffer is parsed with the pure-Python `tflite` schema package; nothing of TensorFlow or
MediaPipe is imported, and no code in the file is ever run: a file is data, read into a list of
checked operator records and constant tensors. Anything else — another op, an int8-quantised
tensor, a buffer whose size does not match its shape, a reference outside the graph — is refused
with one `ModelError` naming it.

TFLite works in NHWC. The torch network keeps 4-D activations in NCHW (what convolutions want)
and turns them back to NHWC only where an op depends on the memory order (RESHAPE,
FULLY_CONNECTED, MEAN) and at the outputs, so the exported ONNX has few transposes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posestream.stream.core.errors import InputNotFoundError, ModelError

SUPPORTED_OPS = ("PAD", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RESIZE_BILINEAR",
                 "MAX_POOL_2D", "RESHAPE", "LOGISTIC", "MEAN", "FULLY_CONNECTED", "PRELU")
# TFLite TensorType -> numpy dtype, for the constant buffers we accept.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}
_SAME, _VALID = 0, 1
MAX_FILE_BYTES = 64 << 20  # the landmark models are 1-7 MB; refuse anything absurd before parsing


@dataclass
class TfliteOp:
    """One operator: its name, input/output tensor indices (-1 = absent) and its checked options."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfliteGraph:
    """What the network is: ops in execution order, constants by tensor index, shapes and names."""

    ops: list[TfliteOp]
    constants: dict[int, np.ndarray]
    shapes: dict[int, tuple[int, ...]]
    names: dict[int, str]
    inputs: list[int]
    outputs: list[int]


def _schema() -> Any:
    try:
        import tflite
    except ImportError:
        raise ModelError("reading TFLite files needs the `tflite` package (pip install tflite)") from None
    return tflite


def _options(tfl: Any, op: Any, cls_name: str) -> Any:
    table = op.BuiltinOptions()
    if table is None:
        raise ModelError(f"operator lacks its {cls_name}")
    options = getattr(tfl, cls_name)()
    options.Init(table.Bytes, table.Pos)
    return options


def _activation(code: int, kind: str) -> str:
    if code not in _ACTIVATIONS:
        raise ModelError(f"{kind} has fused activation {code}, which posestream does not implement")
    return _ACTIVATIONS[code]


def _read_options(tfl: Any, kind: str, op: Any) -> dict[str, Any]:
    if kind == "CONV_2D":
        o = _options(tfl, op, "Conv2DOptions")
        return {"padding": o.Padding(), "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "activation": _activation(o.FusedActivationFunction(), kind)}
    if kind == "DEPTHWISE_CONV_2D":
        o = _options(tfl, op, "DepthwiseConv2DOptions")
        return {"padding": o.Padding(), "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "multiplier": o.DepthMultiplier(),
                "activation": _activation(o.FusedActivationFunction(), kind)}
    if kind == "MAX_POOL_2D":
        o = _options(tfl, op, "Pool2DOptions")
        return {"padding": o.Padding(), "stride": (o.StrideH(), o.StrideW()),
                "filter": (o.FilterHeight(), o.FilterWidth()),
                "activation": _activation(o.FusedActivationFunction(), kind)}
    if kind == "ADD":
        return {"activation": _activation(_options(tfl, op, "AddOptions").FusedActivationFunction(), kind)}
    if kind == "RESIZE_BILINEAR":
        o = _options(tfl, op, "ResizeBilinearOptions")
        if o.AlignCorners() or not o.HalfPixelCenters():
            raise ModelError("RESIZE_BILINEAR without half-pixel centres is not implemented")
        return {}
    if kind == "FULLY_CONNECTED":
        o = _options(tfl, op, "FullyConnectedOptions")
        if o.WeightsFormat() != 0:
            raise ModelError("FULLY_CONNECTED with shuffled weights is not implemented")
        return {"keep_dims": bool(o.KeepNumDims()),
                "activation": _activation(o.FusedActivationFunction(), kind)}
    if kind == "MEAN":
        return {"keep_dims": bool(_options(tfl, op, "ReducerOptions").KeepDims())}
    return {}


def read_tflite(path: Path) -> TfliteGraph:
    """Parse and check `path`; a `ModelError` naming the problem for anything posestream cannot run."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"TFLite model not found: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path}: {size} bytes is larger than any supported TFLite model ({MAX_FILE_BYTES})")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        return _read_graph(_schema(), data)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a malformed flatbuffer fails in many ways inside the parser
        raise ModelError(f"{path} is a malformed TFLite file ({type(exc).__name__}: {exc})") from None


def _read_graph(tfl: Any, data: bytes) -> TfliteGraph:
    model = tfl.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ModelError(f"{model.SubgraphsLength()} subgraphs; posestream reads single-graph models")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    count = graph.TensorsLength()
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if not 0 <= op.OpcodeIndex() < model.OperatorCodesLength():
            raise ModelError(f"operator {i} has opcode index {op.OpcodeIndex()} out of range")
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        if kind not in SUPPORTED_OPS:
            raise ModelError(f"operator {i} is {kind}, which posestream does not implement "
                             f"(supported: {', '.join(SUPPORTED_OPS)})")
        inputs = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        if not outputs or any(not -1 <= t < count for t in inputs + outputs) or -1 in outputs:
            raise ModelError(f"operator {i} ({kind}) refers to tensors outside the graph")
        ops.append(TfliteOp(kind, inputs, outputs, _read_options(tfl, kind, op)))
    shapes, names, constants = {}, {}, {}
    for index in range(count):
        tensor = graph.Tensors(index)
        shapes[index] = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        names[index] = (tensor.Name() or b"").decode("utf-8", "replace")
        quant = tensor.Quantization()
        if quant is not None and quant.ScaleLength():
            raise ModelError(f"tensor '{names[index]}' is int8/uint8-quantised; only float16 weights "
                             "(DEQUANTIZE) are supported")
        buffer_index = tensor.Buffer()
        if not 0 <= buffer_index < model.BuffersLength():
            raise ModelError(f"tensor '{names[index]}' points at buffer {buffer_index} of {model.BuffersLength()}")
        raw = model.Buffers(buffer_index).DataAsNumpy()
        if isinstance(raw, int) or raw is None or len(raw) == 0:
            continue  # an activation, filled at run time
        if tensor.Type() not in _DTYPES:
            raise ModelError(f"constant '{names[index]}' has TFLite type {tensor.Type()}, not float32/16 or int32/64")
        dtype = np.dtype(_DTYPES[tensor.Type()])
        expected = int(np.prod(shapes[index], dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise ModelError(f"constant '{names[index]}' holds {len(raw)} bytes; its shape "
                             f"{list(shapes[index])} needs {expected}")
        constants[index] = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shapes[index])
    inputs = [int(t) for t in graph.InputsAsNumpy()]
    outputs = [int(t) for t in graph.OutputsAsNumpy()]
    if len(inputs) != 1 or len(shapes[inputs[0]]) != 4:
        raise ModelError("expected one NHWC image input")
    return TfliteGraph(ops, constants, shapes, names, inputs, outputs)


# --------------------------------------------------------------------------------- torch network
class _Value:
    """An activation and whether its 4-D layout is NCHW (torch) or TFLite's own NHWC."""

    def __init__(self, tensor: torch.Tensor, nchw: bool) -> None:
        self.tensor, self.nchw = tensor, nchw

    def as_nchw(self) -> torch.Tensor:
        return self.tensor if self.nchw or self.tensor.dim() != 4 else self.tensor.permute(0, 3, 1, 2)

    def as_tflite(self) -> torch.Tensor:
        return self.tensor.permute(0, 2, 3, 1) if self.nchw and self.tensor.dim() == 4 else self.tensor


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (the extra pixel goes after)."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.relu6(x)
    return x


class TfliteNet(nn.Module):
    """The graph as a torch module: input NCHW float [B, 3, H, W] (TFLite's NHWC image, transposed,
    so the exported model looks like every other posestream model); outputs in TFLite layout, in the
    graph's output order. Weights are float32 copies of the file's (float16) constants."""

    def __init__(self, graph: TfliteGraph) -> None:
        super().__init__()
        self.graph = graph
        self.input_shape = graph.shapes[graph.inputs[0]]
        self._params = nn.ParameterDict()
        self._const: dict[int, torch.Tensor] = {}
        values = {i: np.asarray(c, dtype=np.float32) if c.dtype.kind == "f" else c
                  for i, c in graph.constants.items()}
        for op in graph.ops:  # resolve DEQUANTIZE at load time: a constant, not an op
            if op.kind == "DEQUANTIZE":
                if op.inputs[0] not in values:
                    raise ModelError("DEQUANTIZE of a non-constant tensor is not supported")
                values[op.outputs[0]] = values[op.inputs[0]].astype(np.float32)
        self._prepare(values)

    def _param(self, key: str, array: np.ndarray) -> None:
        self._params[key] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                                         requires_grad=False)

    def _prepare(self, values: dict[int, np.ndarray]) -> None:
        """Check every op's constants and turn them into torch layouts, once."""
        self._values = values
        for n, op in enumerate(self.graph.ops):
            weight = values.get(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
            bias = values.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and weight is None:
                raise ModelError(f"{op.kind} {n} has no constant weights")
            if op.kind == "CONV_2D":
                self._param(f"w{n}", weight.transpose(0, 3, 1, 2))
            elif op.kind == "DEPTHWISE_CONV_2D":
                self._param(f"w{n}", weight.transpose(3, 0, 1, 2))  # [1,H,W,C*M] -> [C*M,1,H,W]
            elif op.kind == "FULLY_CONNECTED":
                self._param(f"w{n}", weight)
            elif op.kind == "PRELU":
                alpha = values.get(op.inputs[1])
                if alpha is None:
                    raise ModelError(f"PRELU {n} has no constant slope")
                self._param(f"a{n}", alpha.reshape(-1))
            elif op.kind in ("ADD",):
                for k, t in enumerate(op.inputs):
                    if t in values:
                        self._param(f"c{n}_{k}", values[t])
            if bias is not None and op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                self._param(f"b{n}", bias)
            if op.kind in ("PAD", "RESHAPE", "MEAN", "RESIZE_BILINEAR") and len(op.inputs) > 1:
                if op.inputs[1] not in values:
                    raise ModelError(f"{op.kind} {n} takes its shape from a non-constant tensor")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        env: dict[int, _Value] = {self.graph.inputs[0]: _Value(x, True)}
        for n, op in enumerate(self.graph.ops):
            if op.kind == "DEQUANTIZE":
                continue
            env[op.outputs[0]] = self._run(n, op, env)
        return [env[i].as_tflite() for i in self.graph.outputs]

    def _run(self, n: int, op: TfliteOp, env: dict[int, _Value]) -> _Value:
        o, kind = op.options, op.kind
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = env[op.inputs[0]].as_nchw()
            weight = self._params[f"w{n}"]
            if o["padding"] == _SAME:
                ph = _same_pad(x.shape[2], weight.shape[2], o["stride"][0], o["dilation"][0])
                pw = _same_pad(x.shape[3], weight.shape[3], o["stride"][1], o["dilation"][1])
                if ph[0] == ph[1] and pw[0] == pw[1]:
                    padding = (ph[0], pw[0])
                else:
                    x, padding = F.pad(x, (*pw, *ph)), (0, 0)
            else:
                padding = (0, 0)
            groups = x.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
            bias = self._params[f"b{n}"] if f"b{n}" in self._params else None
            y = F.conv2d(x, weight, bias, o["stride"], padding, o["dilation"], groups)
            return _Value(_activate(y, o["activation"]), True)
        if kind == "MAX_POOL_2D":
            x = env[op.inputs[0]].as_nchw()
            if o["padding"] == _SAME:
                ph = _same_pad(x.shape[2], o["filter"][0], o["stride"][0], 1)
                pw = _same_pad(x.shape[3], o["filter"][1], o["stride"][1], 1)
                if any(ph + pw):
                    x = F.pad(x, (*pw, *ph), value=float("-inf"))
            y = F.max_pool2d(x, o["filter"], o["stride"])
            return _Value(_activate(y, o["activation"]), True)
        if kind == "ADD":
            parts = []
            for k, t in enumerate(op.inputs):
                if f"c{n}_{k}" in self._params:
                    parts.append(None)
                else:
                    parts.append(env[t])
            layout_nchw = any(p is not None and p.nchw and p.tensor.dim() == 4 for p in parts)
            terms = []
            for k, p in enumerate(parts):
                if p is None:
                    c = self._params[f"c{n}_{k}"]
                    if layout_nchw and c.dim() >= 1:  # a per-channel NHWC constant -> [1, C, 1, 1]
                        c = c.reshape(1, -1, 1, 1) if c.numel() > 1 else c.reshape(())
                    terms.append(c)
                else:
                    terms.append(p.as_nchw() if layout_nchw else p.tensor)
            return _Value(_activate(terms[0] + terms[1], o["activation"]), layout_nchw)
        if kind == "PAD":
            value = env[op.inputs[0]]
            pads = self._values[op.inputs[1]].astype(int)  # [[before, after]] per NHWC axis
            if pads[0].any():
                raise ModelError(f"PAD {n} pads the batch axis")
            if value.tensor.dim() == 4:
                (t, b), (l, r), (c0, c1) = pads[1], pads[2], pads[3]
                return _Value(F.pad(value.as_nchw(), (int(l), int(r), int(t), int(b), int(c0), int(c1))), True)
            flat = [int(v) for pair in pads[::-1] for v in pair]
            return _Value(F.pad(value.tensor, flat), False)
        if kind == "RESIZE_BILINEAR":
            size = [int(v) for v in self._values[op.inputs[1]]]
            y = F.interpolate(env[op.inputs[0]].as_nchw(), size=size, mode="bilinear", align_corners=False)
            return _Value(y, True)
        if kind == "LOGISTIC":
            value = env[op.inputs[0]]
            return _Value(torch.sigmoid(value.tensor), value.nchw)
        if kind == "PRELU":
            value = env[op.inputs[0]]
            alpha = self._params[f"a{n}"]
            x = value.as_nchw() if value.tensor.dim() == 4 else value.tensor
            shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
            return _Value(torch.where(x >= 0, x, x * alpha.reshape(shape)), x.dim() == 4)
        if kind == "RESHAPE":
            x = env[op.inputs[0]].as_tflite()
            shape = [int(v) for v in (self._values[op.inputs[1]] if len(op.inputs) > 1
                                      else self.graph.shapes[op.outputs[0]])]
            if shape[0] not in (1, -1):
                raise ModelError(f"RESHAPE {n} changes the batch axis")
            return _Value(x.reshape(x.shape[0], *shape[1:]), False)
        if kind == "MEAN":
            x = env[op.inputs[0]].as_tflite()
            axes = [int(a) for a in np.atleast_1d(self._values[op.inputs[1]])]
            if 0 in axes:
                raise ModelError(f"MEAN {n} averages over the batch axis")
            return _Value(x.mean(dim=axes, keepdim=o["keep_dims"]), False)
        if kind == "FULLY_CONNECTED":
            x = env[op.inputs[0]].as_tflite()
            weight = self._params[f"w{n}"]
            if not o["keep_dims"]:
                x = x.reshape(x.shape[0], -1)
            bias = self._params[f"b{n}"] if f"b{n}" in self._params else None
            return _Value(_activate(F.linear(x, weight, bias), o["activation"]), False)
        raise ModelError(f"operator {kind} is not implemented")  # read_tflite refuses these earlier

    def output_names(self) -> list[str]:
        return [self.graph.names[i] for i in self.graph.outputs]
