"""ONNX -> serialized TensorRT engine (TensorRT 10 and 11 Python APIs), and the INT8 entropy calibrator.

TensorRT is imported inside the functions that need it, so the parts that do not (reading the ONNX
input shapes, loading calibration images) work and are tested on machines without it. Device
memory for calibration batches comes from torch, like everything else on the GPU (no pycuda).

TensorRT 11 removed weak typing (NVIDIA's 10.x -> 11.x migration guide): `BuilderFlag.FP16/INT8`,
`IBuilderConfig.int8_calibrator`, `set_calibration_profile` and the implicit INT8 calibrators are
gone, and a network computes in the types its ONNX file declares. So on 11 an FP16 engine is built
from an FP16-typed ONNX file, which we export from our own torch network (`export_fp16_onnx`), and
INT8 needs an explicitly quantized (Q/DQ) model. 10.x keeps the builder-flag path. The branch is
taken by feature (`strongly_typed_only`), not by version string.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import cv2
import numpy as np

from posestream.engines.backends.engine_cache import ProfileShapes, TensorRTSettings, _atomic_write
from posestream.engines.model_card import Normalisation, letterbox_pad
from posestream.engines.preprocess import TO_INPUT, letterbox, normalise
from posestream.stream.core.errors import BackendUnavailableError, InputError, InputNotFoundError, ModelError
from posestream.stream.core.images import list_images

logger = logging.getLogger(__name__)



def import_tensorrt() -> Any:
    """The `tensorrt` module, or one clear error saying where to get it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(
            "tensorrt is not importable: install the gpu extra (`pip install posestream[gpu]`; the "
            "tensorrt wheels come from NVIDIA's package index, see docs/gpu.md)") from None
    return tensorrt


def strongly_typed_only(trt: Any) -> bool:
    """True for TensorRT >= 11: no precision builder flags; the ONNX types decide the precision."""
    return not hasattr(trt.BuilderFlag, "FP16")


def export_fp16_onnx(model_path: Path, out: Path, opset: int) -> Path:
    """An FP16-typed ONNX twin of a prepared ONNX file, for TensorRT 11's strong typing.

    Exported from the family's torch network (rebuilt from the card's checkpoint,
    `engines.backends.torch_engine.build_from_card`) in FP16 with FP32 decoding; input and output
    stay float32 with the same names and dynamic axes, so the engine is a drop-in for the FP32 one.
    """
    import torch

    from posestream.engines.backends.torch_engine import build_from_card
    from posestream.engines.model_card import ModelCard

    card = ModelCard.load(model_path.parent)
    shapes = [e["input_shape"] for e in card.files.values() if e.get("file") == model_path.name]
    if not shapes:
        raise ModelError(f"{model_path.name} is not listed in its model card; TensorRT 11 FP16 needs "
                         "an FP16 ONNX model (convert it with ModelOpt AutoCast) or use precision fp32")
    shape = shapes[0]
    built = build_from_card(card, model_path.parent, half=True)
    network = built.module

    class Fp32Io(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.half()).float()

    names = {0: "batch", 2: "height", 3: "width"}  # the axis names our exports use
    axes = {i: names[i] for i, d in enumerate(shape) if d is None}
    probe = torch.rand([1 if d is None and i == 0 else 384 if d is None else d for i, d in enumerate(shape)])
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {built.input_name: axes, built.output_name: dict(built.output_axes)}
    with torch.no_grad():
        torch.onnx.export(Fp32Io().eval(), (probe,), str(out), input_names=[built.input_name],
                          output_names=[built.output_name], opset_version=opset, dynamo=False,
                          dynamic_axes=dynamic if axes else None)
    return out


def onnx_inputs(path: Path) -> dict[str, tuple[int | None, ...]]:
    """Graph inputs (initializers excluded) and their shapes, None for symbolic/unknown axes."""
    import onnx
    from google.protobuf.message import DecodeError

    if not Path(path).is_file():
        raise InputNotFoundError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from None
    initializers = {init.name for init in model.graph.initializer}
    shapes: dict[str, tuple[int | None, ...]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if not shapes:
        raise ModelError(f"ONNX model {path} has no inputs")
    return shapes


class CalibrationImages:
    """Calibration batches read from a folder of images, pre-processed like the model's input.

    Images are letterboxed to the input size (aspect kept, `letterbox_pad` around) and normalised as
    the model card's `input` says, by the numpy pre-processing every CPU path uses
    (`preprocess.letterbox`, `Normalisation.of_input`, `preprocess.normalise`). Only full batches
    are produced: TensorRT's calibrator has one fixed batch size. Use images like the ones the model
    will see: whole frames for a detector, person crops for an SPPE.
    """

    def __init__(self, folder: Path | str, input_hw: tuple[int, int], batch_size: int,
                 max_images: int, normalization: Mapping[str, Any] | None = None) -> None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputNotFoundError(f"calibration image folder not found: {folder}")
        self.files = list_images(folder)[:max_images]
        self.input_hw = input_hw
        self.batch_size = min(batch_size, len(self.files))
        if normalization is None:  # no card: the YOLO convention (RGB / 255, grey 114 around), as `to_input`
            self.normalisation, self.pad = TO_INPUT, 114
        else:
            self.normalisation = Normalisation.of_input(normalization, f"calibration for {folder.name}")
            self.pad = letterbox_pad(normalization, f"calibration for {folder.name}")

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    def tag(self) -> str:
        """Identifies the data and pre-processing, so a calibration cache is reused only for them."""
        digest = hashlib.sha256()
        for path in self.files[:len(self) * self.batch_size]:
            digest.update(f"{path.name}:{path.stat().st_size};".encode("utf-8"))
        digest.update(repr((self.input_hw, self.batch_size, self.pad, self.normalisation)).encode("utf-8"))
        return digest.hexdigest()[:12]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            canvases = []
            for path in self.files[start:start + self.batch_size]:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise InputError(f"calibration image {path} cannot be decoded")
                canvases.append(letterbox(image, self.input_hw, self.pad)[0])
            yield normalise(np.stack(canvases), self.normalisation)


@functools.lru_cache(maxsize=1)
def _logger_class() -> type:
    trt = import_tensorrt()

    class ForwardingLogger(trt.ILogger):
        """Sends TensorRT's messages to `logging` and keeps the errors for the exception text."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors = [*self.errors[-19:], msg]  # the latest few are enough for a message
                logger.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                logger.warning("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.INFO:
                logger.debug("TensorRT: %s", msg)

    return ForwardingLogger


def trt_logger() -> Any:
    """A fresh forwarding logger (its `errors` list belongs to one build or one load)."""
    return _logger_class()()


@functools.lru_cache(maxsize=1)
def _calibrator_class() -> type:
    trt = import_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds `CalibrationImages` batches from torch device memory; saves/reuses the cache file."""

        def __init__(self, images: CalibrationImages, cache_path: Path, device: str) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.images = images
            self.cache_path = cache_path
            self.device = device
            self._batches = iter(images)
            self._buffer = None  # the current batch; TensorRT reads it after get_batch returns
            self.batches_fed = 0

        def get_batch_size(self) -> int:
            return self.images.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            import torch

            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            except Exception:  # an exception must not unwind through TensorRT's C++ frames
                logger.exception("calibration batch failed; ending calibration early")
                return None
            self._buffer = torch.from_numpy(batch).to(self.device)
            torch.cuda.synchronize(self.device)
            self.batches_fed += 1
            logger.info("INT8 calibration batch %d/%d", self.batches_fed, len(self.images))
            return [int(self._buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if self.cache_path.is_file():
                logger.info("using INT8 calibration cache %s", self.cache_path)
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            _atomic_write(self.cache_path, bytes(cache))
            logger.info("saved INT8 calibration cache %s", self.cache_path)

    return EntropyCalibrator


def make_calibrator(images: CalibrationImages, cache_path: Path, device: str) -> Any:
    return _calibrator_class()(images, cache_path, device)


def int8_unsupported_message(trt: Any) -> str:
    return (f"precision int8 needs implicit INT8 calibration, which TensorRT {trt.__version__} removed "
            "(TensorRT 11 builds INT8 only from explicitly quantized Q/DQ ONNX models); use precision "
            "fp16, or TensorRT 10.x (pip install 'tensorrt>=10,<11') for calibrated INT8")


def _parser_error_text(error: Any) -> str:
    name = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    where = f"node {error.node()}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
    return f"{where}: {error.desc()}"


def build_engine(onnx_path: Path, settings: TensorRTSettings, shapes: ProfileShapes,
                 device: str, calibrator: Any = None) -> bytes:
    """Parse `onnx_path` and build a serialized engine for the given profile and precision.

    Unsupported layers end in one `ModelError` that lists every parser error (node, operator,
    reason); a failed build lists TensorRT's error messages.
    """
    trt = import_tensorrt()
    strong = strongly_typed_only(trt)
    if strong and (settings.precision == "int8" or calibrator is not None):
        raise ModelError(int8_unsupported_message(trt))
    log = trt_logger()
    builder = trt.Builder(log)
    network = builder.create_network()  # 10 and 11: explicit batch is the only mode, no flags needed
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT's ONNX parser rejected {onnx_path.name} ({len(errors)} "
                         "error(s)):\n  " + "\n  ".join(errors or log.errors or ["no details"]))
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(shapes):
        raise ModelError(f"{onnx_path.name}: TensorRT sees inputs {sorted(names)}, the ONNX graph "
                         f"{sorted(shapes)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if settings.precision in ("fp16", "int8") and not strong:  # 11: the FP16 ONNX file says so
        config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers without an int8 kernel use fp16
    if settings.precision == "int8":
        if calibrator is None:
            raise ModelError("an int8 engine needs a calibrator (tensorrt.calibration_images)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        # Calibration runs at one fixed shape (TensorRT uses the calibration profile's opt shape):
        # the calibrator's batch at the profile's opt height/width.
        calibration = builder.create_optimization_profile()
        for name, (_, opt, _) in shapes.items():
            fixed = (calibrator.get_batch_size(), *opt[1:])
            calibration.set_shape(name, fixed, fixed, fixed)
        config.set_calibration_profile(calibration)
    logger.info("building TensorRT %s engine for %s (profile %s); this takes a while",
                settings.precision, onnx_path.name, shapes)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT could not build an engine for {onnx_path.name}: "
                         + ("; ".join(log.errors[-5:]) or "no error reported"))
    return bytes(plan)
