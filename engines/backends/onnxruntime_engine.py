"""ONNX Runtime backend: CPU by default, the CUDA provider when asked for and present."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort

from posestream.engines.backends.base import Engine, EngineOptions, TensorSpec
from posestream.stream.core.errors import BackendUnavailableError, InputNotFoundError, ModelError
from posestream.stream.core.settings import EngineSettings

_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
    "tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32),
    "tensor(uint8)": np.dtype(np.uint8), "tensor(bool)": np.dtype(np.bool_),
}


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, np.dtype(np.float32)))


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, model_path: Path, device: str = "cpu", threads: int = 0) -> None:
        super().__init__(model_path, device)
        EngineSettings.checked("intra_op_threads", threads)
        if not self.model_path.is_file():
            raise InputNotFoundError(f"model file not found: {self.model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = self._providers(device)
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load ONNX model {self.model_path}: {first_line}") from None
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]

    @classmethod
    def placement(cls, device: str, auto: bool) -> str:
        """Any device this onnxruntime has a provider for; `auto` on `cpu` takes CUDA when this build
        has its provider and an NVIDIA device is present."""
        from posestream.engines.backends.factory import onnxruntime_cuda_usable

        if auto and device == "cpu" and onnxruntime_cuda_usable():
            return "cuda"
        return device

    @classmethod
    def open(cls, model_path: Path, device: str, options: EngineOptions) -> "OnnxRuntimeEngine":
        return cls(model_path, device=device, threads=options.threads)

    @staticmethod
    def _providers(device: str) -> list[str]:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    f"device '{device}' asked for, but this onnxruntime has no CUDA provider")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        raise BackendUnavailableError(f"unknown device '{device}' (use cpu or cuda[:N])")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise ModelError(f"engine for {self.model_path} is closed")
        names = [o.name for o in self._outputs]
        return dict(zip(names, self._session.run(names, dict(feeds))))

    def close(self) -> None:
        self._session = None
