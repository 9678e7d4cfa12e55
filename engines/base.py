"""The engine interface every backend implements.

An engine is made from a model file and a device, states its input/output tensors, and runs a batch.
Callers (detector and pose plugins) never import a runtime: they hold an `Engine`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from stream.errors import BackendUnavailableError, ConfigError

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

    @property
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

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


def resolve_backend(backend: str) -> str:
    """Turn `auto` into the backend that will actually run here; reject unknown names."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}' (valid: {', '.join(BACKENDS)})")
    if backend == "auto":
        return "tensorrt" if tensorrt_available() is None else "onnxruntime"
    if backend == "tensorrt":
        reason = tensorrt_available()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'tensorrt' is unavailable: {reason}")
    return backend


def create_engine(model_path: str | Path, device: str = "cpu", backend: str = "onnxruntime",
                  threads: int = 0) -> Engine:
    """Open `model_path` with the chosen backend. `threads` = intra-op threads (0: runtime default)."""
    backend = resolve_backend(backend)
    if backend == "tensorrt":
        from engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine.from_onnx(Path(model_path), device=device)
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(Path(model_path), device=device, threads=threads)
