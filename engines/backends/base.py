"""The engine interface every backend implements.

An engine is made from a model file and a device, states its input/output tensors, and runs a batch.
Callers (detector and pose plugins) never import a runtime: they hold an `Engine`, made by
`engines.backends.factory.create_engine` (this module imports no backend: the factory's table names them).

A backend is a subclass that implements `placement` (where it would run, or why it cannot),
`open` (load a model file) and `run`; registering it is one line in `engines.backends.factory.BACKENDS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    from posestream.engines.model_card import Normalisation
    from posestream.stream.core.settings import Settings


@dataclass(frozen=True)
class EngineOptions:
    """What a backend may use when opening a model: intra-op `threads` (0 = runtime default), the
    card's input `normalization` (pre-processes INT8 calibration images) and the run's `settings`,
    of which each backend reads its own table (`[engine]` OpenVINO keys, `[torch]`, `[tensorrt]` with
    `model.opset`, `paths.home` for its caches). Backends that need settings refuse None."""

    threads: int = 0
    normalization: Mapping[str, object] | None = None
    settings: "Settings | None" = None


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

    @classmethod
    @abstractmethod
    def placement(cls, device: str, auto: bool) -> str:
        """The device this backend would run on when asked for `device` (with `auto`: the backend
        was not named, so it may pick a better device than the default `cpu`). Raises
        `BackendUnavailableError` with the reason when it cannot run here."""

    @classmethod
    @abstractmethod
    def open(cls, model_path: Path, device: str, options: EngineOptions) -> "Engine":
        """Load `model_path` on `device` (already resolved by `placement`)."""

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name as numpy arrays."""

    def accept_images(self, normalisation: "Normalisation") -> bool:
        """From now on take the first input as uint8 BGR images (N, H, W, 3) and apply
        `normalisation` inside the model, where this backend can; returns whether it does. Call it
        before the first inference. The default keeps float NCHW inputs."""
        return False

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
