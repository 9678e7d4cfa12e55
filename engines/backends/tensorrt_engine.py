"""TensorRT backend: the `Engine` interface over a cached, serialized TensorRT 10 or 11 engine.

`TensorRTEngine.from_onnx` finds the engine for (model sha256, GPU, compute capability, TensorRT
version, precision, profile) in the cache, or builds and stores it. Inference runs with
`execute_async_v3` on a dedicated torch CUDA stream, with tensor addresses taken from torch
tensors: inputs already on the GPU (from `engines.backends.gpu_preprocess`) are used in place, and outputs
stay on the GPU (`run_device`) for the next GPU step, or come back as numpy (`run`).
With TensorRT 11 (strong typing only) an FP16 engine is built from an FP16 ONNX twin exported from
our torch network (`tensorrt_build.export_fp16_onnx`, cached beside the engines); see docs/gpu.md.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from posestream.engines.backends import base
from posestream.engines.backends.base import Engine, EngineOptions, TensorSpec
from posestream.engines.backends.engine_cache import (BatchProfile, EngineCache, EngineKey, cache_root,
                                                     compute_profile, profile_tag)
from posestream.engines.model_card import sha256_file
from posestream.engines.backends.tensorrt_build import (CalibrationImages, build_engine, export_fp16_onnx,
                                               import_tensorrt, int8_unsupported_message, make_calibrator,
                                               onnx_inputs, strongly_typed_only, trt_logger)
from posestream.stream.core.config import home_dir
from posestream.stream.core.errors import (BackendUnavailableError, ConfigError, InputError, InputNotFoundError,
                                           ModelError)
from posestream.stream.core.settings import Settings, TensorRTSettings

logger = logging.getLogger(__name__)


def cuda_device(device: str) -> torch.device:
    """`cuda`/`cuda:N` (and `cpu`, which TensorRT cannot use: it means the default GPU) -> device."""
    if device in ("cpu", "cuda", "auto"):
        return torch.device("cuda", torch.cuda.current_device())
    parsed = torch.device(device) if device.startswith("cuda") else None
    if parsed is None:
        raise BackendUnavailableError(f"unknown device '{device}' for TensorRT (use cuda or cuda:N)")
    index = parsed.index if parsed.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"device '{device}' asked for, but only "
                                      f"{torch.cuda.device_count()} CUDA device(s) are present")
    return torch.device("cuda", index)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT8: torch.int8, trt.DataType.INT32: torch.int32,
             trt.DataType.BOOL: torch.bool, trt.DataType.UINT8: torch.uint8}
    for name, torch_type in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = torch_type
    if dtype not in table:
        raise ModelError(f"TensorRT tensor type {dtype} has no torch equivalent")
    return table[dtype]


_NUMPY_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int8: np.int8,
                torch.int32: np.int32, torch.int64: np.int64, torch.bool: np.bool_,
                torch.uint8: np.uint8, torch.bfloat16: np.float32}  # bf16 is handed out as float32


def _numpy_dtype(torch_type: torch.dtype) -> np.dtype:
    return np.dtype(_NUMPY_TYPES[torch_type])


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of a CUDA device, as torch reports them."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, plan: bytes, model_path: Path, device: str = "cuda",
                 engine_path: Path | None = None, precision: str = "") -> None:
        super().__init__(model_path, device)
        trt = import_tensorrt()
        self._trt = trt
        self.cuda = cuda_device(device)
        self.engine_path = engine_path
        self.precision = precision
        self._log = trt_logger()
        with torch.cuda.device(self.cuda):
            torch.cuda.init()  # TensorRT then runs in torch's (primary) CUDA context
            self._runtime = trt.Runtime(self._log)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ModelError(f"TensorRT cannot load the engine for {self.model_path.name}: "
                                 + ("; ".join(self._log.errors[-3:]) or "no error reported"))
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise ModelError(f"TensorRT cannot create an execution context for "
                                 f"{self.model_path.name} (out of GPU memory?)")
            self._stream = torch.cuda.Stream(device=self.cuda)
        self._torch_types: dict[str, torch.dtype] = {}
        self.profile: dict[str, tuple[tuple[int, ...], ...]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            torch_type = _torch_dtype(trt, self._engine.get_tensor_dtype(name))
            self._torch_types[name] = torch_type
            shape = tuple(int(d) if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            spec = TensorSpec(name, shape, _numpy_dtype(torch_type))
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(spec)
                self.profile[name] = tuple(tuple(int(d) for d in s)
                                           for s in self._engine.get_tensor_profile_shape(name, 0))
            else:
                self._outputs.append(spec)

    @classmethod
    def placement(cls, device: str, auto: bool) -> str:
        """TensorRT runs on CUDA only: `cpu` (the default device) means the default GPU."""
        reason = base.tensorrt_available()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'tensorrt' is unavailable: {reason}")
        return "cuda" if device == "cpu" else device

    @classmethod
    def open(cls, model_path: Path, device: str, options: EngineOptions) -> "TensorRTEngine":
        if options.settings is None:
            raise ConfigError("the TensorRT backend needs the run's settings ([tensorrt], model.opset); "
                              "pass them to create_engine")
        return cls.from_onnx(model_path, options.settings, device=device, normalization=options.normalization)

    @classmethod
    def from_onnx(cls, path: Path | str, run_settings: Settings, device: str = "cuda",
                  profile: BatchProfile | None = None, normalization: Mapping[str, Any] | None = None,
                  rebuild: bool = False) -> "TensorRTEngine":
        """Load the cached engine for this model and GPU, or build and cache it.

        `run_settings`: its `[tensorrt]` table (precision, batch profile, cache), `model.opset` (TensorRT
        11's FP16 twin) and the home its cache defaults to; `profile` overrides the table's batch
        profile. `normalization` (the model card's `input`) is only used to pre-process INT8
        calibration images. `rebuild` ignores a cached engine.
        """
        cls.placement(device, auto=False)
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"model file not found: {path}")
        settings = run_settings.tensorrt
        batch = profile or BatchProfile.of(settings)
        trt = import_tensorrt()
        cuda = cuda_device(device)
        shapes = compute_profile(onnx_inputs(path), batch, settings.max_hw)
        tag = profile_tag(shapes)
        model_sha = sha256_file(path)
        cache = EngineCache(cache_root(settings, home_dir(run_settings)))
        strong = strongly_typed_only(trt)
        if strong and settings.precision == "int8":
            raise ModelError(int8_unsupported_message(trt))
        calibrator = None
        if settings.precision == "int8":
            calibrator, calib_tag = cls._calibrator(path, settings, shapes, model_sha, cache, cuda,
                                                    normalization)
            tag += f";calibration={calib_tag}"
        gpu_name, capability = gpu_identity(cuda)
        key = EngineKey(model_sha, gpu_name, capability, trt.__version__, settings.precision, tag)
        cached = None if rebuild else cache.lookup(key, path.stem)
        if cached is not None:
            try:
                engine = cls(cached.read_bytes(), path, str(cuda), cached, settings.precision)
                logger.info("TensorRT %s engine for %s loaded from %s", settings.precision,
                            path.name, cached)
                return engine
            except ModelError as exc:  # e.g. a driver update made it unloadable: rebuild it
                logger.warning("cached engine %s cannot be loaded (%s); rebuilding", cached, exc)
        start = time.perf_counter()
        source = path
        if strong and settings.precision == "fp16":  # TensorRT 11: the ONNX types are the precision
            source = export_fp16_onnx(path, cache.root / "onnx-fp16" / f"{path.stem}-{model_sha[:16]}.onnx",
                                      run_settings.model.opset)
        with torch.cuda.device(cuda):
            plan = build_engine(source, settings, shapes, str(cuda), calibrator)
        stored = cache.store(key, path.stem, plan, extra={
            "onnx": str(path), "workspace_mib": settings.workspace_mib,
            "build_seconds": round(time.perf_counter() - start, 1)})
        logger.info("TensorRT %s engine for %s built in %.1f s on %s, cached as %s",
                    settings.precision, path.name, time.perf_counter() - start, gpu_name, stored)
        return cls(plan, path, str(cuda), stored, settings.precision)

    @staticmethod
    def _calibrator(path: Path, settings: TensorRTSettings, shapes: dict, model_sha: str,
                    cache: EngineCache, cuda: torch.device,
                    normalization: Mapping[str, Any] | None) -> tuple[Any, str]:
        if len(shapes) != 1:
            raise ModelError(f"{path.name}: INT8 calibration supports single-input models, "
                             f"this one has {len(shapes)} inputs")
        if not settings.calibration_images:
            raise InputError("precision int8 needs calibration images: set "
                             "tensorrt.calibration_images to a folder of representative images")
        (low, opt, high), = shapes.values()
        if len(opt) != 4:
            raise ModelError(f"{path.name}: INT8 calibration from images needs an NCHW input, "
                             f"got shape {list(opt)}")
        batch = low[0] if low[0] == high[0] else min(settings.calibration_batch, high[0])
        images = CalibrationImages(settings.calibration_images, (opt[2], opt[3]), batch,
                                   settings.calibration_max_images, normalization)
        if images.batch_size != batch and low[0] == high[0]:
            raise InputError(f"{path.name} has a fixed batch of {batch}: calibration needs at least "
                             f"{batch} images, {settings.calibration_images} has {len(images.files)}")
        calib_tag = images.tag()
        cache_path = cache.calibration_path(model_sha, f"{opt}:{calib_tag}")
        return make_calibrator(images, cache_path, str(cuda)), calib_tag

    def _check_open(self) -> None:
        if self._context is None:
            raise ModelError(f"engine for {self.model_path} is closed")

    def run_device(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one batch on GPU tensors; returns GPU tensors, ready on the caller's current stream.

        Inputs on the CPU or of another dtype are converted first. The work is enqueued on this
        engine's own stream, ordered after the caller's pending work and before the caller's next.
        """
        self._check_open()
        missing = [s.name for s in self._inputs if s.name not in feeds]
        if missing:
            raise InputError(f"missing input(s) {missing}; the engine takes "
                             f"{[s.name for s in self._inputs]}")
        with torch.cuda.device(self.cuda):
            caller = torch.cuda.current_stream(self.cuda)
            used: list[torch.Tensor] = []
            for spec in self._inputs:
                tensor = torch.as_tensor(feeds[spec.name]).to(
                    self.cuda, self._torch_types[spec.name], non_blocking=True).contiguous()
                self._set_input(spec, tensor)
                used.append(tensor)
            outputs: dict[str, torch.Tensor] = {}
            for spec in self._outputs:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise ModelError(f"output '{spec.name}' has an unresolved shape {shape}")
                out = torch.empty(shape, dtype=self._torch_types[spec.name], device=self.cuda)
                self._context.set_tensor_address(spec.name, out.data_ptr())
                outputs[spec.name] = out
                used.append(out)
            self._stream.wait_stream(caller)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise ModelError(f"TensorRT execution failed for {self.model_path.name}: "
                                 + ("; ".join(self._log.errors[-3:]) or "no error reported"))
            for tensor in used:  # the allocator must not reuse them before the engine is done
                tensor.record_stream(self._stream)
            caller.wait_stream(self._stream)
        return outputs

    def _set_input(self, spec: TensorSpec, tensor: torch.Tensor) -> None:
        shape = tuple(tensor.shape)
        low, _, high = self.profile[spec.name]
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            raise InputError(f"input '{spec.name}' shape {list(shape)} is outside the engine's "
                             f"profile {list(low)}..{list(high)} (rebuild with a larger "
                             "tensorrt.max_batch / max_input_size)")
        if not self._context.set_input_shape(spec.name, shape):
            raise InputError(f"TensorRT rejected input shape {list(shape)} for '{spec.name}'")
        self._context.set_tensor_address(spec.name, tensor.data_ptr())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_open()
        device_feeds = {name: torch.from_numpy(np.ascontiguousarray(array))
                        for name, array in feeds.items()}
        outputs = self.run_device(device_feeds)
        return {name: tensor.float().cpu().numpy() if tensor.dtype == torch.bfloat16
                else tensor.cpu().numpy() for name, tensor in outputs.items()}

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
