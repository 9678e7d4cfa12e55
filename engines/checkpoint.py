"""Allow-list loading of PyTorch checkpoints: no arbitrary code ever runs.

A `.pt`/`.pth` file is a pickle; plain unpickling lets the file call any importable function. Here
every global the pickle names is looked up in an explicit allow-list: tensor rebuild helpers and
storage types map to our own functions, and the model classes a caller names (e.g. the
`ultralytics.*` classes of a YOLO checkpoint) map to inert `StandIn` objects that only hold the
attributes the pickle gives them. Anything else raises `UnsafeCheckpointError` before it is called.

Both torch serialization formats are read: the zip archive (torch >= 1.6) and the legacy
sequential pickle format that older checkpoints (e.g. AlphaPose's model zoo) use.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np
import torch

from posestream.stream.core.errors import InputNotFoundError, ModelError, UnsafeCheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """What a pickled `torch.HalfStorage` (etc.) global becomes: just the element dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _StandInMeta(type):
    """Lets code in the pickle read attributes of a stand-in *class* (e.g. `Detect.forward`)."""

    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return f"<inert {cls.__qualname__}.{name}>"


class StandIn(metaclass=_StandInMeta):
    """Inert replacement for a checkpoint class: keeps its pickled state, has no behaviour."""

    qualified_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"StandIn({self.qualified_name})"


def _make_stand_in(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return _StandInMeta(name, (StandIn,), {"qualified_name": qualified_name, "__module__": module})


def _rebuild_tensor(flat: torch.Tensor, offset: int, size: Iterable[int], stride: Iterable[int],
                    *_ignored: Any) -> torch.Tensor:
    return flat.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_ignored: Any) -> torch.Tensor:
    return data


def _safe_getattr(obj: Any, name: str) -> Any:
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return getattr(obj, name)
    raise UnsafeCheckpointError(f"checkpoint asks for getattr on {obj!r}, which is not allowed")


_BASE_GLOBALS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "torch.Size": tuple,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.getattr": _safe_getattr,
    **{f"torch.{name}": _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, fh: BinaryIO, allowed: dict[str, Any], load_storage: Callable[[tuple], torch.Tensor],
                 source: Path) -> None:
        super().__init__(fh)
        self._allowed = allowed
        self._load_storage = load_storage
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol-2 pickles from Python 2 era code paths
            module = "builtins"
        qualified = f"{module}.{name}"
        if qualified in self._allowed:
            return self._allowed[qualified]
        raise UnsafeCheckpointError(
            f"checkpoint {self._source} refers to '{qualified}', which is not on the allow-list; "
            "refusing to load it (nothing was executed)")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"checkpoint {self._source} has an unknown persistent id {pid!r}")
        return self._load_storage(pid)


def _flat_tensor(raw: bytes, storage_type: Any, source: Path) -> torch.Tensor:
    if not isinstance(storage_type, _StorageType):
        raise UnsafeCheckpointError(f"checkpoint {source}: storage of unexpected type {storage_type!r}")
    if storage_type.dtype == torch.bfloat16:
        return torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16)
    return torch.frombuffer(bytearray(raw), dtype=storage_type.dtype) if raw else torch.empty(
        0, dtype=storage_type.dtype)


def _load_zip(path: Path, allowed: dict[str, Any]) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ModelError(f"{path} is a zip file but not a torch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        cache: dict[str, torch.Tensor] = {}

        def load_storage(pid: tuple) -> torch.Tensor:
            _, storage_type, key, _location, _numel = pid[:5]
            if key not in cache:
                try:
                    raw = archive.read(f"{prefix}data/{key}")
                except KeyError:
                    raise ModelError(f"checkpoint {path} is truncated: storage {key} missing") from None
                cache[key] = _flat_tensor(raw, storage_type, path)
            return cache[key]

        with archive.open(pickles[0]) as fh:
            return _AllowListUnpickler(io.BytesIO(fh.read()), allowed, load_storage, path).load()


def _load_legacy(fh: BinaryIO, path: Path, allowed: dict[str, Any]) -> Any:
    """Legacy format: magic, protocol, sys-info pickles, then the object pickle, then the storages."""
    plain = {"builtins.dict": dict}  # the three header pickles hold plain values only
    for _ in range(3):
        header = _AllowListUnpickler(fh, plain, lambda pid: None, path).load()  # type: ignore[arg-type]
        if _ == 0 and header != _LEGACY_MAGIC:
            raise ModelError(f"{path} is not a torch checkpoint (bad magic number)")
    pending: dict[str, tuple[Any, int]] = {}
    flats: dict[str, torch.Tensor] = {}

    def load_storage(pid: tuple) -> torch.Tensor:
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise ModelError(f"checkpoint {path} uses storage views, which are not supported")
        pending.setdefault(key, (storage_type, numel))
        flats.setdefault(key, torch.empty(0))
        return _LazyStorage(key, flats)  # type: ignore[return-value]

    obj = _AllowListUnpickler(fh, allowed, load_storage, path).load()
    keys = _AllowListUnpickler(fh, {}, lambda pid: None, path).load()  # type: ignore[arg-type]
    for key in keys:
        storage_type, numel = pending[key]
        (count,) = struct.unpack("<q", fh.read(8))
        itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
        raw = fh.read(count * itemsize)
        if count != numel or len(raw) != count * itemsize:
            raise ModelError(f"checkpoint {path} is truncated or inconsistent at storage {key}")
        flats[key] = _flat_tensor(raw, storage_type, path)
    return _resolve_lazy(obj)


class _LazyStorage:
    """Placeholder for a legacy-format storage whose bytes come after the object pickle."""

    def __init__(self, key: str, flats: dict[str, torch.Tensor]) -> None:
        self.key, self.flats = key, flats


class _LazyTensor:
    def __init__(self, storage: _LazyStorage, args: tuple) -> None:
        self.storage, self.args = storage, args

    def resolve(self) -> torch.Tensor:
        return _rebuild_tensor(self.storage.flats[self.storage.key], *self.args)


def _lazy_rebuild(storage: Any, *args: Any) -> Any:
    if isinstance(storage, _LazyStorage):
        return _LazyTensor(storage, args)
    return _rebuild_tensor(storage, *args)


def _resolve_lazy(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.resolve()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve_lazy(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve_lazy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve_lazy(v) for v in obj)
    if isinstance(obj, StandIn):
        obj.__dict__.update({k: _resolve_lazy(v) for k, v in obj.__dict__.items()})
    return obj


def load_checkpoint(path: str | Path, stand_ins: Iterable[str] = ()) -> Any:
    """Unpickle a torch checkpoint through the allow-list.

    `stand_ins` names extra classes (`module.Class`) that may appear and become inert `StandIn`s.
    Tensors come back as plain CPU `torch.Tensor`s.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint not found: {path}")
    allowed = dict(_BASE_GLOBALS)
    allowed.update({name: _make_stand_in(name) for name in stand_ins})
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, allowed)
        with path.open("rb") as fh:
            allowed["torch._utils._rebuild_tensor_v2"] = _lazy_rebuild
            allowed["torch._utils._rebuild_tensor"] = _lazy_rebuild
            return _load_legacy(fh, path, allowed)
    except (UnsafeCheckpointError, ModelError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, struct.error,
            zipfile.BadZipFile, RuntimeError, AttributeError, IndexError) as exc:
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def module_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rebuild `state_dict()` from a tree of stand-in `nn.Module`s (their pickled `_parameters`,
    `_buffers` and `_modules`), in the order torch itself would produce it."""
    state: dict[str, torch.Tensor] = {}
    attrs = module.__dict__ if isinstance(module, StandIn) else {}
    skip = attrs.get("_non_persistent_buffers_set", set())
    for name, tensor in attrs.get("_parameters", {}).items():
        if tensor is not None:
            state[prefix + name] = tensor
    for name, tensor in attrs.get("_buffers", {}).items():
        if tensor is not None and name not in skip:
            state[prefix + name] = tensor
    for name, child in attrs.get("_modules", {}).items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


def to_numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Float tensors as float32 numpy arrays (for inspection and tests)."""
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
