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

from posestream.engines.backends.base import Engine, EngineOptions
from posestream.stream.core.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from posestream.stream.core.settings import Settings

log = logging.getLogger(__name__)

# name: (package it needs, "module:Engine subclass"); order = `auto` preference
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt", "posestream.engines.backends.tensorrt_engine:TensorRTEngine"),
    "torch": ("torch", "posestream.engines.backends.torch_engine:TorchEngine"),  # auto: only on a visible GPU
    "openvino": ("openvino", "posestream.engines.backends.openvino_engine:OpenVinoEngine"),
    "onnxruntime": ("onnxruntime", "posestream.engines.backends.onnxruntime_engine:OnnxRuntimeEngine"),
}


# Backends `auto` considers only on a machine with an NVIDIA GPU.
GPU_ONLY_FOR_AUTO = ("tensorrt", "torch")


def nvidia_device_present() -> bool:
    """Whether the NVIDIA driver exposes a device here (/dev/nvidia0, ...). Checked before `auto`
    asks a GPU backend: importing torch only to learn there is no GPU costs every stage seconds
    and hundreds of MB."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def onnxruntime_cuda_usable() -> bool:
    """Whether `auto` may run ONNX Runtime on the GPU: an NVIDIA device is present and this
    onnxruntime build has the CUDA provider. Without a device onnxruntime is not imported (0.2 s of
    every detect stage's start on a CPU machine)."""
    if not nvidia_device_present():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


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
        if name in GPU_ONLY_FOR_AUTO and not nvidia_device_present():
            reasons.append(f"{name}: no NVIDIA device")  # decided without importing torch/TensorRT
            continue
        try:
            return name, backend_class(name).placement(device, auto=True)
        except BackendUnavailableError as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailableError("no inference backend can run here (" + "; ".join(reasons) + ")")


def create_engine(model_path: str | Path, device: str = "cpu", backend: str = "onnxruntime",
                  threads: int = 0, normalization: Mapping[str, object] | None = None,
                  settings: "Settings | None" = None) -> Engine:
    """Open `model_path` with the chosen backend. `threads` = intra-op threads (0: runtime default);
    `normalization` = the card's `input` (INT8 calibration); `settings` = the run's (the torch and
    TensorRT backends need them; OpenVINO takes its hint, requests and cache from them)."""
    from posestream.engines.model_check import check_onnx_file

    if Path(model_path).suffix == ".onnx":  # OpenVINO IR (INT8) files are checked by their card's sha256
        check_onnx_file(Path(model_path))  # hostile external-data paths, truncated tensors: refused here
    requested = (backend, device)
    backend, device = resolve_backend(backend, device)
    log.info("inference backend: %s on %s (asked for %s on %s)", backend, device, *requested)
    return backend_class(backend).open(Path(model_path), device,
                                       EngineOptions(threads, normalization, settings))
