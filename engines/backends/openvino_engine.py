"""OpenVINO backend (CPU): FP32 ONNX models and NNCF INT8 models behind the `Engine` interface.

A model with dynamic input axes is compiled for each input shape it meets, made static first: the
CPU plugin runs a static model far faster (the INT8 detector at 640x384 on 2 threads: ~11 ms static
against ~14-23 ms dynamic, `benchmarks/model_latency.py`). A video stream meets one shape, so this
is one compile (~0.5 s, ~0.2 s with `cache_dir`) at its first frame; the heartbeat timeout allows
far more. Past `MAX_STATIC_SHAPES` shapes (a folder of images of every aspect) the remaining shapes
share one dynamic compile, so compiles stay bounded.
`submit`/`collect` keep several infer requests in flight (`AsyncInferQueue`): with the throughput
hint they run in parallel, one CPU stream each, and a caller prepares the next input meanwhile;
`run` (one batch, waited for) always uses a latency-compiled model, so a lone frame gets every core.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from posestream.engines.backends.base import Engine, EngineOptions, TensorSpec
from posestream.engines.model_card import Normalisation
from posestream.stream.core.config import home_dir
from posestream.stream.core.errors import BackendUnavailableError, InputNotFoundError, ModelError
from posestream.stream.core.settings import EngineSettings

log = logging.getLogger(__name__)


def openvino_available() -> str | None:
    """None when OpenVINO's CPU plugin can run here, else the reason it cannot."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino not installed (pip install openvino)"
    return None


def _dtype(element_type: Any) -> np.dtype:
    try:
        return np.dtype(element_type.to_dtype())
    except (AttributeError, TypeError, RuntimeError):  # dynamic or exotic types
        return np.dtype(np.float32)


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, _dtype(port.get_element_type()))


Shapes = tuple[tuple[int, ...], ...]  # the shapes of one call's inputs, in the model's input order
MAX_STATIC_SHAPES = 8  # input shapes compiled static; further shapes share one dynamic compile


class OpenVinoEngine(Engine):
    """One OpenVINO model on the CPU. `threads` = inference threads (0: OpenVINO decides);
    `hint` = "latency" (one request uses every thread) or "throughput" (parallel streams);
    `requests` = infer requests kept for `submit`; `cache_dir` = where compiled blobs are cached."""

    backend = "openvino"

    def __init__(self, model_path: Path, device: str = "cpu", threads: int = 0, hint: str = "latency",
                 requests: int = 2, cache_dir: Path | None = None) -> None:
        super().__init__(model_path, device)
        EngineSettings.checked("intra_op_threads", threads)  # the bounds [engine] declares
        EngineSettings.checked("openvino_hint", hint)
        EngineSettings.checked("openvino_requests", requests)
        if device != "cpu":
            raise BackendUnavailableError(f"backend 'openvino' runs on the CPU here, not on '{device}'")
        if not self.model_path.is_file():
            raise InputNotFoundError(f"model file not found: {self.model_path}")
        reason = openvino_available()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'openvino' is unavailable: {reason}")
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        self._properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self._properties["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self._properties["CACHE_DIR"] = str(cache_dir)
        self.requests = int(requests)
        try:
            self._model = self._core.read_model(str(self.model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a long C++ trace
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"cannot load model {self.model_path} with OpenVINO: {first}") from None
        self._inputs = [_spec(p) for p in self._model.inputs]
        self._outputs = [_spec(p) for p in self._model.outputs]
        self._static = all(None not in spec.shape for spec in self._inputs)
        # `run` serves one frame at a time (live sources, the sequential loop): with the throughput
        # hint a lone request would get one core, so it runs on a latency-compiled twin instead.
        self._hint = hint.upper()
        self._compiled: dict[tuple[Shapes | None, str], Any] = {}  # (shapes, hint) -> compiled model
        self._requests: dict[Shapes | None, Any] = {}  # `run`: one latency request per shape
        self._queues: dict[Shapes | None, Any] = {}  # `submit`: one async queue per shape
        self._compiled_shapes: set[Shapes] = set()
        self._done: dict[int, dict[str, np.ndarray]] = {}  # finished, not yet collected
        self._pending: set[int] = set()  # submitted, not yet collected
        self._finished_cond = threading.Condition()  # notified by OpenVINO's callback thread
        self._closed = False
        if self._static:  # nothing to learn from the inputs: compile now, as a model load does
            self._compiled_for(None, self._hint)

    def _compiled_for(self, shapes: Shapes | None, hint: str) -> Any:
        """The model compiled for `shapes` (None: as the file declares them) with `hint`, once."""
        key = (shapes, hint)
        if key not in self._compiled:
            self._compiled[key] = self._compile(shapes, {**self._properties, "PERFORMANCE_HINT": hint})
        return self._compiled[key]

    def _compile(self, shapes: Shapes | None, properties: dict[str, Any]) -> Any:
        model = self._model
        if shapes is not None:
            model = self._model.clone()
            try:
                model.reshape({port: self._ov.PartialShape(list(shape))
                               for port, shape in zip(model.inputs, shapes)})
            except Exception as exc:  # noqa: BLE001 - the model's own shape logic refused
                raise ModelError(f"{self.model_path.name} cannot take inputs of shapes {list(shapes)}: "
                                 f"{(str(exc).strip().splitlines() or ['?'])[0]}") from None
        try:
            return self._core.compile_model(model, "CPU", properties)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's errors are untyped RuntimeErrors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"OpenVINO cannot compile {self.model_path.name}: {first}") from None

    def _key(self, arrays: Mapping[str, np.ndarray]) -> Shapes | None:
        """Which compile serves these inputs: their own static shapes, or None (the file's shapes)
        for a static model and for shapes past the bound."""
        if self._static:
            return None
        missing = [spec.name for spec in self._inputs if spec.name not in arrays]
        if missing:
            raise ModelError(f"{self.model_path.name}: no value given for input(s) {missing}")
        shapes = tuple(tuple(arrays[spec.name].shape) for spec in self._inputs)
        if shapes in self._compiled_shapes or len(self._compiled_shapes) < MAX_STATIC_SHAPES:
            self._compiled_shapes.add(shapes)
            return shapes
        return None

    def _request_for(self, key: Shapes | None) -> Any:
        if key not in self._requests:
            self._requests[key] = self._compiled_for(key, "LATENCY").create_infer_request()
        return self._requests[key]

    def _queue_for(self, key: Shapes | None) -> Any:
        if key not in self._queues:
            queue = self._ov.AsyncInferQueue(self._compiled_for(key, self._hint), self.requests)
            queue.set_callback(self._finished)
            self._queues[key] = queue
        return self._queues[key]

    def accept_images(self, normalisation: Normalisation) -> bool:
        """Fold `normalisation` into the model with OpenVINO's `PrePostProcessor`: the first input
        becomes uint8 BGR NHWC, converted, colour-swapped and scaled inside the graph. The CPU then
        skips numpy's float NCHW copy (4 bytes per value instead of 1) and fuses the arithmetic into
        the first layer: the INT8 detector at 640x384 took 1.2-1.6 ms (5-7 %) less per inference
        with the same outputs (docs/benchmarks.md). Refused (False) for what the graph cannot
        express here: several inputs, or an input that is not float32 NCHW with 3 channels."""
        ov = self._ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        first_input = self._inputs[0] if len(self._inputs) == 1 else None
        if (first_input is None or first_input.dtype != np.float32 or len(first_input.shape) != 4
                or first_input.shape[1] not in (3, None) or normalisation.layout != "NCHW"):
            return False
        ppp = PrePostProcessor(self._model)
        first = ppp.input(0)
        first.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR)
        first.model().set_layout(ov.Layout("NCHW"))
        steps = first.preprocess().convert_element_type(ov.Type.f32)
        if normalisation.rgb:
            steps.convert_color(ColorFormat.RGB)
        if normalisation.scale != 1.0:
            steps.scale(1.0 / normalisation.scale)  # PrePostProcessor divides by its scale
        if any(normalisation.mean):
            steps.mean(list(normalisation.mean))
        if any(v != 1.0 for v in normalisation.std):
            steps.scale(list(normalisation.std))
        self._model = ppp.build()
        self._inputs = [_spec(p) for p in self._model.inputs]
        self._compiled.clear()
        self._requests.clear()
        self._queues.clear()
        self._compiled_shapes.clear()
        if self._static:
            self._compiled_for(None, self._hint)
        return True

    @classmethod
    def placement(cls, device: str, auto: bool) -> str:
        """The CPU only. With `auto`, ONNX Runtime on an NVIDIA GPU is preferred to the CPU."""
        from posestream.engines.backends.factory import onnxruntime_cuda_usable

        if device != "cpu":
            raise BackendUnavailableError(f"backend 'openvino' runs on the CPU here, not on '{device}'")
        if auto and onnxruntime_cuda_usable():
            raise BackendUnavailableError("a CUDA device is present (ONNX Runtime runs there)")
        return "cpu"

    @classmethod
    def open(cls, model_path: Path, device: str, options: EngineOptions) -> "OpenVinoEngine":
        if options.settings is None:
            return cls(model_path, device=device, threads=options.threads)
        engine = options.settings.engine
        return cls(model_path, device=device, threads=options.threads, hint=engine.openvino_hint,
                   requests=engine.openvino_requests,
                   cache_dir=home_dir(options.settings) / "engines" / "openvino")

    def _check_open(self) -> None:
        if self._closed:
            raise ModelError(f"engine for {self.model_path} is closed")

    # -- running -----------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_open()
        arrays = {name: np.ascontiguousarray(x) for name, x in feeds.items()}
        request = self._request_for(self._key(arrays))
        request.infer(arrays, share_inputs=True)
        # the request reuses its output buffers on the next call: hand out copies
        return {spec.name: request.get_output_tensor(i).data.copy() for i, spec in enumerate(self._outputs)}

    def submit(self, tag: int, feeds: Mapping[str, np.ndarray]) -> None:
        """Start one inference without waiting; its outputs come back from `collect` under `tag`.
        Up to `requests` run at once per input shape; a further `submit` waits for a free request."""
        self._check_open()
        if tag in self._pending:
            raise ModelError(f"an inference under tag {tag} is already in flight")
        arrays = {name: np.ascontiguousarray(x) for name, x in feeds.items()}
        queue = self._queue_for(self._key(arrays))
        self._pending.add(tag)
        queue.start_async(arrays, userdata=(tag, arrays), share_inputs=True)

    def _finished(self, request: Any, userdata: tuple[int, Any]) -> None:
        tag, _ = userdata  # the inputs were kept alive in userdata until here
        outputs = {spec.name: request.get_output_tensor(i).data.copy() for i, spec in enumerate(self._outputs)}
        with self._finished_cond:
            self._done[tag] = outputs
            self._finished_cond.notify_all()

    def finished(self, tag: int) -> bool:
        """Whether the inference submitted under `tag` is done (`collect` would not wait)."""
        return tag in self._done

    def collect(self, tag: int) -> dict[str, np.ndarray]:
        """The outputs of the submitted inference `tag`, waiting for it alone."""
        self._check_open()
        if tag not in self._pending:
            raise ModelError(f"no inference was submitted under tag {tag}")
        with self._finished_cond:
            arrived = self._finished_cond.wait_for(lambda: tag in self._done, timeout=5.0)
        if not arrived:  # long for one frame: wait for every request (outside the lock, which
            self._drain_queues()  # the callbacks take), which raises a failed request's error
            if tag not in self._done:
                raise ModelError(f"{self.model_path.name}: the inference under tag {tag} ended "
                                 "without outputs")
        self._pending.discard(tag)
        return self._done.pop(tag)

    def _drain_queues(self) -> None:
        for queue in self._queues.values():
            queue.wait_all()

    def close(self) -> None:
        if self._closed:
            return
        self._drain_queues()
        self._closed = True
        self._queues.clear()
        self._requests.clear()
        self._compiled.clear()
        self._done.clear()
        self._pending.clear()
