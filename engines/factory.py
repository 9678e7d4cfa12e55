"""The engine factory: backend name -> engine class, and the `auto` choice.

`BACKENDS` is the one table of backends. Its order is `auto`'s preference (the first that can run
here wins); each entry names the Python package the backend needs (probed without importing it, so a
CPU-only stage never pays for importing torch to learn that TensorRT is absent) and where its
`Engine` subclass lives. Adding a backend is one line here plus its module.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from posestream.engines.base import Engine, EngineOptions
from posestream.stream.core.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from posestream.engines.engine_cache import TensorRTSettings
    from posestream.engines.torch_settings import TorchSettings

log = logging.getLogger(__name__)

# name: (package it needs, "module:Engine subclass"); order = `auto` preference
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt", "posestream.engines.tensorrt_engine:TensorRTEngine"),
    "torch": ("torch", "posestream.engines.torch_engine:TorchEngine"),  # auto: only on a visible GPU
    "onnxruntime": ("onnxruntime", "posestream.engines.onnxruntime_engine:OnnxRuntimeEngine"),
}


def backend_names() -> tuple[str, ...]:
    """Every valid `engine.backend` value."""
    return (*BACKENDS, "auto")


def importable(package: str) -> bool:
    """Whether `package` is installed (found, not imported)."""
    return importlib.util.find_spec(package) is not None


def backend_class(name: str) -> type[Engine]:
    """The engine class of backend `name`; an unknown name names the key and the valid ones."""
    if name not in BACKENDS:
        raise ConfigError(f"config key 'engine.backend' = {name!r} is not one of: "
                          f"{', '.join(backend_names())}")
    package, target = BACKENDS[name]
    if not importable(package):
        raise BackendUnavailableError(f"backend '{name}' is unavailable: {package} not importable")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_backend(backend: str, device: str = "cpu") -> tuple[str, str]:
    """Turn a requested (backend, device) into what will actually run here.

    `auto` = the first backend of `BACKENDS` that can run here (its `placement` decides the device;
    with `auto` the device `cpu`, the default, means "not chosen")."""
    if backend != "auto":
        return backend, backend_class(backend).placement(device, auto=False)
    reasons = []
    for name, (package, _) in BACKENDS.items():
        if not importable(package):
            reasons.append(f"{name}: {package} not importable")
            continue
        try:
            return name, backend_class(name).placement(device, auto=True)
        except BackendUnavailableError as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailableError("no inference backend can run here (" + "; ".join(reasons) + ")")


def create_engine(model_path: str | Path, device: str = "cpu", backend: str = "onnxruntime",
                  threads: int = 0, tensorrt: "TensorRTSettings | None" = None,
                  normalization: Mapping[str, object] | None = None,
                  torch_settings: "TorchSettings | None" = None) -> Engine:
    """Open `model_path` with the chosen backend. `threads` = intra-op threads (0: runtime default);
    `tensorrt` = the `[tensorrt]` settings; `normalization` = the card's `input` (INT8 calibration)."""
    from posestream.engines.model_check import check_onnx_file

    check_onnx_file(Path(model_path))  # hostile external-data paths, truncated tensors: refused here
    requested = (backend, device)
    backend, device = resolve_backend(backend, device)
    log.info("inference backend: %s on %s (asked for %s on %s)", backend, device, *requested)
    return backend_class(backend).open(Path(model_path), device,
                                       EngineOptions(threads, tensorrt, normalization, torch_settings))
