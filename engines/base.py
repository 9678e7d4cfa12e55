"""The engine interface every backend implements.

An engine is made from a model file and a device, states its input/output tensors, and runs a batch.
Callers (detector and pose plugins) never import a runtime: they hold an `Engine`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from posestream.stream.core.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from posestream.engines.engine_cache import TensorRTSettings

BACKENDS = ("onnxruntime", "tensorrt", "auto")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dynamic axis) and dtype of one model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


class Engine(ABC):
    """A loaded model. Use as a context manager; `close()` is safe to call twice."""

    backend: str = ""

    def __init__(self, model_path: Path, device: str) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self._inputs: list[TensorSpec] = []  # filled by the backend once the model is loaded
        self._outputs: list[TensorSpec] = []

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name as numpy arrays."""

    def run1(self, batch: np.ndarray) -> np.ndarray:
        """Convenience for single-input, single-output models."""
        return self.run({self.inputs[0].name: batch})[self.outputs[0].name]

    def close(self) -> None:
        """Release the session; subclasses extend it and keep it idempotent."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tensorrt_available() -> str | None:
    """None when TensorRT can run here, else the precise reason it cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt not importable"
    try:
        import torch
    except ImportError:
        return "torch not importable"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def resolve_backend(backend: str, device: str = "cpu") -> tuple[str, str]:
    """Turn a requested (backend, device) into what will actually run here; reject unknown names.

    `auto` = TensorRT when it is importable and a GPU is present, else ONNX Runtime with its CUDA
    provider when present, else ONNX Runtime on the CPU; with `auto` the device `cpu` (the default)
    means "not chosen". TensorRT only runs on CUDA, so `tensorrt` with device `cpu` uses `cuda`.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}' (valid: {', '.join(BACKENDS)})")
    if backend == "auto":
        if tensorrt_available() is None:
            return "tensorrt", "cuda" if device == "cpu" else device
        import onnxruntime

        if device == "cpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "onnxruntime", "cuda"
        return "onnxruntime", device
    if backend == "tensorrt":
        reason = tensorrt_available()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'tensorrt' is unavailable: {reason}")
        return backend, "cuda" if device == "cpu" else device
    return backend, device


def create_engine(model_path: str | Path, device: str = "cpu", backend: str = "onnxruntime",
                  threads: int = 0, tensorrt: "TensorRTSettings | None" = None,
                  normalization: Mapping[str, object] | None = None) -> Engine:
    """Open `model_path` with the chosen backend. `threads` = intra-op threads (0: runtime default).

    `tensorrt` carries the `[tensorrt]` settings (precision, batch profile, cache; default: the
    default config's); `normalization` (the model card's `input`) pre-processes INT8 calibration.
    """
    import logging

    from posestream.engines.model_check import check_onnx_file

    check_onnx_file(Path(model_path))  # hostile external-data paths, truncated tensors: refused here
    requested = (backend, device)
    backend, device = resolve_backend(backend, device)
    logging.getLogger(__name__).info("inference backend: %s on %s (asked for %s on %s)",
                                     backend, device, *requested)
    if backend == "tensorrt":
        from posestream.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine.from_onnx(Path(model_path), device=device, settings=tensorrt,
                                        normalization=normalization)
    from posestream.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(Path(model_path), device=device, threads=threads)
