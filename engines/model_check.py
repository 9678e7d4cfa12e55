"""Check at load time that a model's tensors fit the kind its card declares.

A card that says "heatmap pose model for coco17" on a file that emits YOLO rows ([B, 56, N]) or 26
heatmaps would otherwise fail later as garbage keypoints or an index error deep in a decoder. Here it
is one `ModelError` that names the model, the declared kind and the tensor that does not fit.

Every task expects one float input [B, 3, H, W]; H, W equal the card's `input["size"]` when both are
known (checked here). The outputs are checked by the family that owns the card's task (its
`check.py`, e.g. `families/heatmap/check.py`: one output [B, K, H/stride, W/stride]), found through
`engines.family`.

When the file leaves output dimensions symbolic (exporters do after a Reshape or Flatten), one batch
of zeros is run to learn the real shapes, so such a file cannot slip through unchecked.

Before any runtime opens an ONNX file, `check_onnx_file` reads its graph without external data
and refuses, with one `ModelError`, a file that is not ONNX, a tensor whose stored bytes do not
match its shape and type (truncated or oversized), and external data that lies outside the model's
folder (absolute paths, `..`, symlinks leading out) or past the end of its file: a model file in
the cache must not make the runtime read anything outside the cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from posestream.engines.backends.base import Engine, TensorSpec
from posestream.engines.family import kind_check
from posestream.engines.model_card import ModelCard
from posestream.stream.core.errors import ModelError
from posestream.stream.core.keypoints import FORMATS

if TYPE_CHECKING:
    import onnx


def shape_text(spec: TensorSpec) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"


def fits(actual: int | None, wanted: int | None) -> bool:
    """A dynamic or unknown dimension fits anything."""
    return actual is None or wanted is None or actual == wanted


def declared_keypoints(card: ModelCard) -> int:
    """Keypoint count of the card's format; `output["num_keypoints"]`, when given, must agree."""
    declared = card.output.get("num_keypoints")
    known = FORMATS.get(card.keypoint_format)
    if known is not None and declared is not None and declared != known.num_keypoints:
        raise ModelError(f"model card '{card.name}' is inconsistent: format '{card.keypoint_format}' "
                         f"has {known.num_keypoints} keypoints, output.num_keypoints says {declared}")
    if known is not None:
        return known.num_keypoints
    if not isinstance(declared, int) or declared < 1:
        raise ModelError(f"model card '{card.name}': unknown keypoint format '{card.keypoint_format}' "
                         f"(known: {', '.join(FORMATS)}) and no output.num_keypoints")
    return declared


def _input_size(engine: Engine, card: ModelCard) -> tuple[tuple[int | None, int | None], str | None]:
    """(H, W) of the image input, or a problem description."""
    inputs = engine.inputs
    if len(inputs) != 1:
        return (None, None), f"expected one image input, the model has {len(inputs)}: " + ", ".join(
            f"{i.name} {shape_text(i)}" for i in inputs)
    spec = inputs[0]
    if len(spec.shape) != 4 or not fits(spec.shape[1], 3):
        return (None, None), f"input '{spec.name}' is {shape_text(spec)}, expected [B, 3, H, W]"
    if not np.issubdtype(spec.dtype, np.floating):
        return (None, None), f"input '{spec.name}' is {spec.dtype}, expected a float tensor"
    size = card.input.get("size")
    height, width = spec.shape[2], spec.shape[3]
    if size is not None:
        if not (fits(height, size[0]) and fits(width, size[1])):
            return (None, None), (f"input '{spec.name}' is {shape_text(spec)}, the card's input size is "
                                  f"{list(size)} (H, W)")
        height, width = height or size[0], width or size[1]
    return (height, width), None


def _probed_outputs(engine: Engine, size: tuple[int | None, int | None]) -> list[TensorSpec]:
    """The outputs with concrete non-batch dimensions, from one zero batch when the file has symbols."""
    outputs = engine.outputs
    if all(None not in spec.shape[1:] for spec in outputs) or None in size:
        return outputs
    spec = engine.inputs[0]
    try:
        results = engine.run({spec.name: np.zeros((1, 3, *size), dtype=spec.dtype)})
    except Exception as exc:  # runtimes raise their own untyped errors for shape problems
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"model {engine.model_path} fails on a {size[0]}x{size[1]} input: "
                         f"{first_line}") from None
    return [TensorSpec(o.name, (None, *results[o.name].shape[1:]), o.dtype) for o in outputs]


def check_model_kind(engine: Engine, card: ModelCard) -> None:
    """Raise a `ModelError` when the engine's inputs/outputs do not fit `card.task` and its format
    (the output check is the family's that owns the task, `engines.family.kind_check`)."""
    try:
        check = kind_check(card.task)
    except ModelError as exc:
        raise ModelError(f"model '{card.name}': {exc}") from None
    keypoints = declared_keypoints(card)
    size, problem = _input_size(engine, card)
    if problem is None:
        problem = check(_probed_outputs(engine, size), keypoints, size, card)
    if problem is not None:
        raise ModelError(f"model '{card.name}' ({engine.model_path}) does not fit its card "
                         f"(task '{card.task}', format '{card.keypoint_format}'): {problem}")


MAX_TENSOR_BYTES = 1 << 34  # 16 GiB: larger than any pose model; a header claiming more is hostile


def _tensors(graph: "onnx.GraphProto") -> Iterator["onnx.TensorProto"]:
    """Every stored tensor: initializers and tensor attributes, in subgraphs too."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _tensors(sub)


def _expected_bytes(tensor: "onnx.TensorProto", where: str) -> int | None:
    """Bytes that the tensor's shape and type need; None for types without a fixed item size."""
    import onnx

    if any(d < 0 for d in tensor.dims):
        raise ModelError(f"{where}: tensor '{tensor.name}' has a negative dimension {list(tensor.dims)}")
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    count = int(np.prod(tensor.dims, dtype=object)) if tensor.dims else 1
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (count + 1) // 2
    return count * itemsize


def _external_file(tensor: "onnx.TensorProto", folder: Path, where: str) -> tuple[Path, int, int | None]:
    """(file, offset, length) of an external tensor, the file proven to be inside `folder`."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise ModelError(f"{where}: tensor '{tensor.name}' is stored externally but names no file")
    if Path(location).is_absolute() or ".." in Path(location).parts:
        raise ModelError(f"{where}: tensor '{tensor.name}' points outside the model's folder "
                         f"({location!r}); refused")
    path = (folder / location).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ModelError(f"{where}: tensor '{tensor.name}' points outside the model's folder "
                         f"({location!r} leads to {path}); refused")
    if not path.is_file():
        raise ModelError(f"{where}: tensor '{tensor.name}' needs {location!r}, which is missing")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"{where}: tensor '{tensor.name}' has a malformed external-data offset or "
                         "length") from None
    return path, offset, length


def check_onnx_file(path: Path) -> None:
    """Refuse a hostile or damaged ONNX file before a runtime opens it (see the module docstring).
    Reads the graph only; external tensor files are checked by their size, not read."""
    import onnx

    path = Path(path)
    where = f"ONNX model {path}"
    if not path.is_file():
        return  # the engine says "not found" in its own words
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load ONNX model {path}: not a readable ONNX file ({first_line})") from None
    folder = path.parent
    for tensor in _tensors(model.graph):
        wanted = _expected_bytes(tensor, where)
        if wanted is not None and wanted > MAX_TENSOR_BYTES:
            raise ModelError(f"{where}: tensor '{tensor.name}' claims {wanted / 2**30:.0f} GiB "
                             f"({list(tensor.dims)}); refused")
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            file, offset, length = _external_file(tensor, folder, where)
            size = file.stat().st_size
            stored = size - offset if length is None else length
            if offset < 0 or stored < 0 or offset + stored > size:
                raise ModelError(f"{where}: tensor '{tensor.name}' lies past the end of "
                                 f"{file.name} (offset {offset}, length {stored}, file {size} bytes)")
        elif tensor.HasField("raw_data"):
            stored = len(tensor.raw_data)
        else:
            continue  # typed fields (float_data, ...): protobuf already counted them
        if wanted is not None and stored != wanted:
            kind = "truncated" if stored < wanted else "oversized"
            raise ModelError(f"{where}: tensor '{tensor.name}' is {kind}: {stored} bytes stored, "
                             f"{wanted} needed for {list(tensor.dims)}")
