"""Read a TensorFlow.js graph model (`model.json` + `.bin` weight shards) and rebuild part of its
graph in torch.

A graph model's `model.json` holds the TensorFlow GraphDef as JSON (`modelTopology.node`: name, op,
inputs, attributes) and a weights manifest: groups of weights, each group stored in one or more
shard files read back to back, each weight with its name, shape, dtype and optional quantisation
(`uint8`/`uint16` with `scale` and `min`: value = q * scale + min; `float16`: stored as half
floats). Nothing is executed and TensorFlow is not imported: the file is data, read into checked
nodes and numpy constants. Problems are one `ModelError` naming them: a shard that is missing,
shorter or longer than the manifest says, a dtype or quantisation we do not read, a node whose
input does not exist, control-flow functions, an op we do not rebuild.

`TfjsNet` runs the sub-graph between one input node and chosen output nodes (the network's heads),
for the ops of MobileNet/BlazePose-style convolutional networks (`SUPPORTED_OPS`); the models'
own post-processing (argmax, gathers, anchor arithmetic) is left to plain numpy decoders. TF works
in NHWC; the torch network keeps 4-D activations in NCHW, and constants meant for NHWC are
turned once at load time, so the exported ONNX has no transposes inside.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posestream.stream.core.errors import InputNotFoundError, ModelError

# manifest dtype -> numpy dtype, for weights stored unquantised
_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
# quantisation dtype -> numpy dtype of the stored values
_QUANTISED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}
MAX_JSON_BYTES = 16 << 20      # topologies are 0.1-1 MB
MAX_WEIGHT_BYTES = 256 << 20   # the largest model we read is 28 MB

SUPPORTED_OPS = ("Const", "Identity", "Placeholder", "AddV2", "Add", "Sub", "Mul", "RealDiv",
                 "Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative",
                 "Relu", "Relu6", "Sigmoid", "ResizeBilinear", "MaxPool", "Pad", "DepthToSpace")
_FUSED = ("BiasAdd", "Relu", "Relu6")


@dataclass
class TfjsNode:
    """One GraphDef node: its op, the names of the nodes it reads (output index stripped, control
    inputs dropped) and its raw attributes."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.attrs.get(key, {}).get("list", {}).get("i", [])]

    def string(self, key: str, default: str = "") -> str:
        value = self.attrs.get(key, {}).get("s")
        return base64.b64decode(value).decode("utf-8", "replace") if value else default

    def strings(self, key: str) -> list[str]:
        return [base64.b64decode(v).decode("utf-8", "replace")
                for v in self.attrs.get(key, {}).get("list", {}).get("s", [])]

    def flag(self, key: str) -> bool:
        return bool(self.attrs.get(key, {}).get("b", False))

    def integer(self, key: str, default: int = 0) -> int:
        return int(self.attrs.get(key, {}).get("i", default))


@dataclass
class TfjsGraph:
    """The checked graph: nodes by name (file order), constants by node name, the signature's
    input/output tensors, and the provenance fields of model.json (generatedBy, convertedBy)."""

    nodes: dict[str, TfjsNode]
    weights: dict[str, np.ndarray]
    signature: dict[str, Any]
    meta: dict[str, str]

    def node(self, name: str) -> TfjsNode:
        if name not in self.nodes:
            raise ModelError(f"the graph has no node '{name}'")
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise ModelError(f"node '{name}' is not a constant with stored weights")
        return self.weights[name]


def _shard_name(path: str) -> str:
    """A shard path from the manifest, refused unless it is a plain name beside model.json."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or len(pure.parts) != 1:
        raise ModelError(f"weights manifest names shard {path!r}; only files beside model.json are read")
    return path


def _weight(spec: dict[str, Any], data: memoryview, offset: int, where: str) -> tuple[np.ndarray, int]:
    """One manifest entry read from its group's bytes at `offset`; returns it and its byte count."""
    name = spec.get("name")
    shape = spec.get("shape")
    dtype = spec.get("dtype")
    if not isinstance(name, str) or not isinstance(shape, list) or not all(
            isinstance(s, int) and s >= 0 for s in shape):
        raise ModelError(f"{where}: malformed weight entry {json.dumps(spec)[:120]}")
    if dtype not in _DTYPES:
        raise ModelError(f"{where}: weight '{name}' has dtype {dtype!r}; posestream reads "
                         f"{', '.join(_DTYPES)}")
    quant = spec.get("quantization")
    stored = np.dtype(_DTYPES[dtype])
    if quant is not None:
        qtype = quant.get("dtype") if isinstance(quant, dict) else None
        if qtype not in _QUANTISED:
            raise ModelError(f"{where}: weight '{name}' is quantised as {qtype!r}; posestream reads "
                             f"{', '.join(_QUANTISED)}")
        stored = np.dtype(_QUANTISED[qtype])
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    size = count * stored.itemsize
    if offset + size > len(data):
        raise ModelError(f"{where}: weight '{name}' needs bytes {offset}..{offset + size}, but the "
                         f"shards hold {len(data)} (truncated .bin file?)")
    raw = np.frombuffer(data[offset:offset + size], dtype=stored).reshape(shape)
    if quant is None:
        return raw.copy(), size
    if quant["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:
        try:
            scale, low = float(quant["scale"]), float(quant["min"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{where}: weight '{name}' is {quant['dtype']}-quantised without a "
                             "numeric scale and min") from None
        values = raw.astype(np.float32) * np.float32(scale) + np.float32(low)
    if dtype == "int32":
        values = np.round(values).astype(np.int32)
    elif dtype == "bool":
        values = values != 0
    return values, size


def _read_weights(manifest: Any, load: Callable[[str], bytes], where: str) -> dict[str, np.ndarray]:
    if not isinstance(manifest, list):
        raise ModelError(f"{where}: weightsManifest is not a list of groups")
    weights: dict[str, np.ndarray] = {}
    total = 0
    for index, group in enumerate(manifest):
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) \
                or not isinstance(group.get("weights"), list):
            raise ModelError(f"{where}: weights group {index} lacks its paths or weights")
        chunks = []
        for path in group["paths"]:
            chunks.append(load(_shard_name(path)))
            total += len(chunks[-1])
            if total > MAX_WEIGHT_BYTES:
                raise ModelError(f"{where}: weight shards exceed {MAX_WEIGHT_BYTES} bytes")
        data = memoryview(b"".join(chunks))
        offset = 0
        for spec in group["weights"]:
            if not isinstance(spec, dict):
                raise ModelError(f"{where}: malformed weight entry in group {index}")
            value, size = _weight(spec, data, offset, where)
            weights[spec["name"]] = value
            offset += size
        if offset != len(data):
            raise ModelError(f"{where}: the manifest of group {index} describes {offset} bytes, but its "
                             f"shards {', '.join(group['paths'])} hold {len(data)}")
    return weights


def _read_nodes(topology: Any, where: str) -> dict[str, TfjsNode]:
    if not isinstance(topology, dict) or not isinstance(topology.get("node"), list):
        raise ModelError(f"{where}: modelTopology has no node list (not a graph model?)")
    if (topology.get("library") or {}).get("function"):
        raise ModelError(f"{where}: the graph uses functions (control flow), which posestream does not rebuild")
    nodes: dict[str, TfjsNode] = {}
    for raw in topology["node"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("op"), str):
            raise ModelError(f"{where}: malformed node {json.dumps(raw)[:120]}")
        inputs = [str(i).split(":")[0] for i in raw.get("input", []) if not str(i).startswith("^")]
        nodes[raw["name"]] = TfjsNode(raw["name"], raw["op"], inputs, raw.get("attr") or {})
    for node in nodes.values():
        for name in node.inputs:
            if name not in nodes:
                raise ModelError(f"{where}: node '{node.name}' reads '{name}', which is not in the graph")
    return nodes


def read_tfjs_graph(model_json: bytes, load_shard: Callable[[str], bytes], where: str = "model.json") -> TfjsGraph:
    """Parse and check a graph model from its JSON bytes; `load_shard(name)` returns a shard's bytes
    (raising `ModelError`/`InputNotFoundError` when it is missing)."""
    if len(model_json) > MAX_JSON_BYTES:
        raise ModelError(f"{where}: {len(model_json)} bytes is larger than any supported model.json")
    try:
        model = json.loads(model_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where} is not JSON: {exc}") from None
    if not isinstance(model, dict) or model.get("format", "graph-model") != "graph-model":
        fmt = model.get("format") if isinstance(model, dict) else type(model).__name__
        raise ModelError(f"{where} is a {fmt!r} model; posestream reads TensorFlow.js graph models")
    nodes = _read_nodes(model.get("modelTopology"), where)
    weights = _read_weights(model.get("weightsManifest"), load_shard, where)
    for node in nodes.values():
        if node.op == "Const" and node.name not in weights:
            raise ModelError(f"{where}: constant '{node.name}' has no weights in the manifest")
    meta = {k: str(model[k]) for k in ("format", "generatedBy", "convertedBy") if k in model}
    return TfjsGraph(nodes, weights, model.get("signature") or {}, meta)


def read_tfjs(path: Path) -> TfjsGraph:
    """A graph model from a `model.json` file (or a `NAME.json`) and the shards beside it."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"TensorFlow.js model not found: {path}")

    def load(name: str) -> bytes:
        shard = path.parent / name
        if not shard.is_file():
            raise ModelError(f"{path}: weight shard {name} is missing")
        return shard.read_bytes()

    return read_tfjs_graph(path.read_bytes(), load, str(path))


def read_tfjs_member(read: Callable[[str], bytes], member: str, where: str) -> TfjsGraph:
    """A graph model stored as `member` of an archive (its shards beside it), from `read(path)`."""
    folder = PurePosixPath(member).parent
    return read_tfjs_graph(read(member), lambda name: read(str(folder / name)), f"{where}:{member}")


# --------------------------------------------------------------------------------- torch network
def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (the extra pixel goes after)."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _resize_target(graph: TfjsGraph, node: TfjsNode) -> dict[str, Any]:
    """A ResizeBilinear's output size: `{"size": [h, w]}` from a constant, or `{"scale": [sh, sw]}`
    when the graph computes it as the input's own size times a constant (Keras' UpSampling2D in a
    model with a free input size)."""
    size = graph.node(node.inputs[1])
    if size.op == "Const":
        return {"size": [int(v) for v in graph.const(size.name).reshape(-1)]}
    if size.op == "Mul" and len(size.inputs) == 2:
        first, second = (graph.node(n) for n in size.inputs)
        shape_slice, factor = (first, second) if second.op == "Const" else (second, first)
        source = graph.node(shape_slice.inputs[0]) if shape_slice.op == "StridedSlice" else None
        if factor.op == "Const" and source is not None and source.op == "Shape" \
                and source.inputs[0] == node.inputs[0]:
            begin = graph.const(shape_slice.inputs[1]).reshape(-1)
            end = graph.const(shape_slice.inputs[2]).reshape(-1)
            scale = graph.const(factor.name).reshape(-1)
            if begin.tolist() == [1] and end.tolist() == [3] and len(scale) in (1, 2):
                return {"scale": [int(scale[0]), int(scale[-1])]}
    raise ModelError(f"node '{node.name}': ResizeBilinear to a size computed by '{size.name}' ({size.op}) "
                     "is not supported (a constant or the input's size times a constant is)")


def _reads(node: TfjsNode) -> list[str]:
    """The inputs a rebuilt node computes from: a resize's target size is read when the node is
    rebuilt (a constant, or the input's size times a constant), not computed at run time."""
    return node.inputs[:1] if node.op == "ResizeBilinear" else node.inputs


def needed_nodes(graph: TfjsGraph, input_name: str, outputs: list[str]) -> list[TfjsNode]:
    """The nodes that compute `outputs` from `input_name`, in an order where every node comes after
    its inputs; one `ModelError` names the first node whose op is not rebuilt."""
    order: list[TfjsNode] = []
    state: dict[str, int] = {}  # 1 = being visited, 2 = done
    for output in outputs:
        stack = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(graph.node(name))
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ModelError(f"node '{name}' depends on itself; not a feed-forward graph")
            state[name] = 1
            stack.append((name, True))
            if name != input_name:
                stack.extend((i, False) for i in reversed(_reads(graph.node(name))) if state.get(i) != 2)
    if input_name not in state:
        raise ModelError(f"outputs {outputs} do not depend on input node '{input_name}'")
    for node in order:
        if node.name != input_name and node.op not in SUPPORTED_OPS:
            raise ModelError(f"node '{node.name}' is op {node.op}, which posestream does not rebuild "
                             f"(supported: {', '.join(SUPPORTED_OPS)})")
    return order


class TfjsNet(nn.Module):
    """The sub-graph from `input_name` to `outputs` as a torch module: input NCHW float [B, C, H, W]
    (what the input node would hold, transposed); outputs NCHW for 4-D tensors, in `outputs` order.
    Weights are float32 copies of the file's (dequantised) constants."""

    def __init__(self, graph: TfjsGraph, input_name: str, outputs: list[str]) -> None:
        super().__init__()
        self.input_name, self.output_names = input_name, list(outputs)
        self.order = [n for n in needed_nodes(graph, input_name, outputs) if n.name != input_name]
        self.tensors = nn.ParameterDict()
        self.steps: list[tuple[str, TfjsNode, dict[str, Any]]] = []
        for node in self.order:
            if node.op == "Const":
                continue
            self.steps.append((node.op, node, self._prepare(graph, node)))

    def _param(self, key: str, value: np.ndarray) -> str:
        self.tensors[key] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)),
                                         requires_grad=False)
        return key

    def _prepare(self, graph: TfjsGraph, node: TfjsNode) -> dict[str, Any]:
        """Check one node's attributes and constants and turn them into torch layouts, once."""
        key = f"n{len(self.steps)}"
        op = node.op
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            if node.string("data_format", "NHWC") != "NHWC":
                raise ModelError(f"node '{node.name}': data format {node.string('data_format')} is not supported")
            weight = graph.const(node.inputs[1]).astype(np.float32)
            if weight.ndim != 4:
                raise ModelError(f"node '{node.name}': filter of shape {list(weight.shape)}")
            depthwise = "Depthwise" in op
            if depthwise:  # [H, W, C, M] -> [C*M, 1, H, W], channel c*M + m as in TF
                kh, kw, c, m = weight.shape
                weight = weight.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]
            else:  # HWIO -> OIHW
                weight = weight.transpose(3, 2, 0, 1)
            fused = node.strings("fused_ops") if op.startswith(("_Fused", "Fused")) else []
            if any(f not in _FUSED for f in fused) or (fused and fused[0] != "BiasAdd"):
                raise ModelError(f"node '{node.name}' fuses {fused}; posestream rebuilds BiasAdd + Relu/Relu6")
            spec = {"weight": self._param(key + "w", weight), "depthwise": depthwise,
                    "stride": tuple(node.ints("strides")[1:3]) or (1, 1),
                    "dilation": tuple(node.ints("dilations")[1:3]) or (1, 1),
                    "padding": node.string("padding"), "act": fused[1] if len(fused) > 1 else None}
            if spec["padding"] not in ("SAME", "VALID"):
                raise ModelError(f"node '{node.name}': padding {spec['padding']!r} is not supported")
            if fused:
                spec["bias"] = self._param(key + "b", graph.const(node.inputs[2]).reshape(-1))
            return spec
        if op in ("AddV2", "Add", "Sub", "Mul", "RealDiv"):
            spec: dict[str, Any] = {"operands": []}
            for k, name in enumerate(node.inputs[:2]):
                if graph.node(name).op == "Const":
                    spec["operands"].append(("const", self._param(f"{key}c{k}", graph.const(name))))
                else:
                    spec["operands"].append(("value", name))
            return spec
        if op == "ResizeBilinear":
            if node.flag("align_corners") == node.flag("half_pixel_centers"):
                raise ModelError(f"node '{node.name}': ResizeBilinear needs exactly one of align_corners "
                                 "and half_pixel_centers (TF's legacy sampling is not rebuilt)")
            return {**_resize_target(graph, node), "align": node.flag("align_corners")}
        if op == "MaxPool":
            return {"kernel": tuple(node.ints("ksize")[1:3]), "stride": tuple(node.ints("strides")[1:3]),
                    "padding": node.string("padding")}
        if op == "Pad":
            pads = graph.const(node.inputs[1]).astype(int).reshape(-1, 2)
            if len(pads) != 4 or pads[0].any():
                raise ModelError(f"node '{node.name}': padding {pads.tolist()} is not an NHWC image padding")
            (t, b), (l, r), (c0, c1) = pads[1], pads[2], pads[3]
            return {"pads": (int(l), int(r), int(t), int(b), int(c0), int(c1))}
        if op == "DepthToSpace":
            return {"block": node.integer("block_size")}
        return {}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for op, node, spec in self.steps:
            env[node.name] = self._run(op, node, spec, env)
        return tuple(env[name] for name in self.output_names)

    def _const(self, key: str, like: torch.Tensor) -> torch.Tensor:
        value = self.tensors[key]
        if like.dim() == 4 and value.dim() >= 1:
            return value.reshape((1,) * (4 - value.dim()) + tuple(value.shape)).permute(0, 3, 1, 2)
        return value

    def _run(self, op: str, node: TfjsNode, spec: dict[str, Any], env: dict[str, torch.Tensor]) -> torch.Tensor:
        if op == "Identity":
            return env[node.inputs[0]]
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            x = env[node.inputs[0]]
            weight = self.tensors[spec["weight"]]
            padding: tuple[int, int] = (0, 0)
            if spec["padding"] == "SAME":
                ph = _same_pad(x.shape[2], weight.shape[2], spec["stride"][0], spec["dilation"][0])
                pw = _same_pad(x.shape[3], weight.shape[3], spec["stride"][1], spec["dilation"][1])
                if ph[0] == ph[1] and pw[0] == pw[1]:
                    padding = (ph[0], pw[0])
                else:
                    x = F.pad(x, (*pw, *ph))
            groups = x.shape[1] if spec["depthwise"] else 1
            bias = self.tensors[spec["bias"]] if "bias" in spec else None
            y = F.conv2d(x, weight, bias, spec["stride"], padding, spec["dilation"], groups)
            if spec["act"] == "Relu":
                y = F.relu(y)
            elif spec["act"] == "Relu6":
                y = F.relu6(y)
            return y
        if op in ("AddV2", "Add", "Sub", "Mul", "RealDiv"):
            values = [env[ref] for kind, ref in spec["operands"] if kind == "value"]
            like = values[0] if values else torch.zeros(())
            a, b = [env[ref] if kind == "value" else self._const(ref, like) for kind, ref in spec["operands"]]
            return {"AddV2": torch.add, "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
                    "RealDiv": torch.div}[op](a, b)
        if op == "Relu":
            return F.relu(env[node.inputs[0]])
        if op == "Relu6":
            return F.relu6(env[node.inputs[0]])
        if op == "Sigmoid":
            return torch.sigmoid(env[node.inputs[0]])
        if op == "ResizeBilinear":
            if "scale" in spec:
                return F.interpolate(env[node.inputs[0]], scale_factor=tuple(float(v) for v in spec["scale"]),
                                     mode="bilinear", align_corners=spec["align"])
            return F.interpolate(env[node.inputs[0]], size=spec["size"], mode="bilinear",
                                 align_corners=spec["align"])
        if op == "MaxPool":
            x = env[node.inputs[0]]
            if spec["padding"] == "SAME":
                ph = _same_pad(x.shape[2], spec["kernel"][0], spec["stride"][0], 1)
                pw = _same_pad(x.shape[3], spec["kernel"][1], spec["stride"][1], 1)
                if any(ph + pw):
                    x = F.pad(x, (*pw, *ph), value=float("-inf"))
            return F.max_pool2d(x, spec["kernel"], spec["stride"])
        if op == "Pad":
            return F.pad(env[node.inputs[0]], spec["pads"])
        if op == "DepthToSpace":  # TF's DCR order: channel (i * bs + j) * C + c
            x, bs = env[node.inputs[0]], spec["block"]
            b, c, h, w = x.shape
            x = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
            return x.reshape(b, c // (bs * bs), h * bs, w * bs)
        raise ModelError(f"op {op} is not implemented")  # needed_nodes refuses these earlier
