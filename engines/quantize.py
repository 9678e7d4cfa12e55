"""INT8 models: NNCF post-training quantization of the default model for OpenVINO, and its data.

The FP32 dynamic-shape ONNX model is read by OpenVINO, quantized by NNCF on letterboxed calibration
frames, and saved as an OpenVINO IR (`.xml` + `.bin`) beside the ONNX files; the model card's `extra["int8"]`
(apart from `files`, which lists ONNX variants only) records the IR's files and where it came from (the FP32 file's sha256, the calibration
source and count, the recipe and its settings, the NNCF and OpenVINO versions). `ensure_int8`
rebuilds it when it is missing, damaged, made from another FP32 file or with other settings; it
keeps a model calibrated on the user's own data (`--calibration`) while that model is current.

Default calibration data exists on a fresh machine without a model hub: Ultralytics' own sample
photos (`ultralytics/assets/bus.jpg`, `zidane.jpg`, read from the `ultralytics` wheel that pip
downloads from PyPI; the package is never installed or imported) and frames of the built-in demo
clip; each also mirrored. Users pass their own images or video (`--calibration`), which fits their
cameras better.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.preprocess import canvas_size, letterbox, to_input
from posestream.engines.wheels import fetch_wheel
from posestream.stream.core.config import home_dir
from posestream.stream.core.errors import InputError, InputNotFoundError, ModelError
from posestream.stream.core.images import list_images
from posestream.stream.core.settings import QuantizeSettings, Settings

log = logging.getLogger(__name__)

INT8_KEY = "int8"  # card.extra[INT8_KEY]: the INT8 model of the FP32 variant below
FP32_VARIANT = "dynamic"
# Bumped whenever the quantization recipe changes, so cached INT8 models are rebuilt.
RECIPE = "nncf-ptq-v2"  # preset, float layers and bias correction are recorded beside it
# The head's decode arithmetic (DFL softmax/conv, anchor/stride Add/Sub/Mul/Div, score sigmoids) of
# our own YOLO11 export (`/model.23/...`, outside the cv2/cv3/cv4 conv branches) stays in float:
# quantizing pixel coordinates to 8 bits would cost keypoint accuracy for no speed.
HEAD_FLOAT_PATTERNS = [r".*/model\.23/(dfl/.*|Add.*|Sub.*|Mul.*|Div.*|Softmax.*|Sigmoid.*|Concat.*)"]
# The first conv (raw pixels in) and the last 1x1 conv of every head branch (box, score and keypoint
# values out): the layers whose rounding reaches the outputs most directly.
EDGE_FLOAT_PATTERNS = [r".*/model\.0/conv/Conv", r".*/model\.23/cv[234]\.\d/cv[234]\.\d\.2/Conv"]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts")


def nncf_available() -> str | None:
    """None when NNCF (needed only to build INT8 models) is importable, else how to get it."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "nncf not installed (pip install 'posestream[quantize]')"
    return None


# -- calibration data -------------------------------------------------------------------------------

def _read_zip_image(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    try:
        data = np.frombuffer(archive.read(member), np.uint8)
    except KeyError:
        raise InputError(f"{archive.filename} does not contain {member}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{member} in {archive.filename} is not a readable image")
    return image


# frames of the built-in demo clip, given by the caller (the clip is the runtime's, a layer above):
# `frames(count)` -> BGR images
DemoFrames = Callable[[int], list[np.ndarray]]


def default_calibration(config: Settings, demo: DemoFrames | None = None) -> tuple[list[np.ndarray], str]:
    """Ultralytics' sample photos from its PyPI wheel plus demo-clip frames, each also mirrored.
    (Random crops of the photos were tried as extra samples and measured worse: COCO AP 0.635.)"""
    cfg = config.quantize
    wheel = fetch_wheel(cfg.assets_wheel, home_dir(config) / "downloads")
    with zipfile.ZipFile(wheel) as archive:
        photos = [_read_zip_image(archive, member) for member in cfg.assets]
    clip = demo(cfg.demo_frames) if demo is not None and cfg.demo_frames else []
    images = photos + clip
    images += [cv2.flip(image, 1) for image in images]
    names = ", ".join(Path(m).name for m in cfg.assets)
    return images, f"{cfg.assets_wheel} ({names}) + {len(clip)} demo-clip frames, mirrored"


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    """`count` frames spread evenly over a video (decoded once, sampled by index)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"calibration video {path} has no video stream")
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    except av.FFmpegError as exc:
        raise InputError(f"calibration video {path} cannot be read: {exc}") from None
    if not frames:
        raise InputError(f"calibration video {path} has no frames")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return [frames[i] for i in picks]


def user_calibration(path: Path, count: int) -> tuple[list[np.ndarray], str]:
    """Images of a folder (sorted, the first `count`) or `count` frames spread over a video."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"calibration data not found: {path}")
    if path.is_dir():
        files = list_images(path)[:count]
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
        unreadable = [p.name for p, image in zip(files, images) if image is None]
        if unreadable:
            raise InputError(f"calibration images not readable: {', '.join(unreadable[:5])}")
        return images, f"{path} ({len(images)} images)"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _video_frames(path, count)
        return frames, f"{path} ({len(frames)} frames)"
    raise InputError(f"calibration data must be a folder of images or a video file, got {path}")


def network_inputs(images: list[np.ndarray], long_side: int, pad: int = 114) -> list[np.ndarray]:
    """Each image letterboxed as the detector feeds it (the frame's aspect, `long_side` pixels)."""
    return [to_input([letterbox(image, canvas_size(*image.shape[:2], long_side), pad)[0]])
            for image in images]


# -- quantization -------------------------------------------------------------------------------------

def quantize_ir(fp32_onnx: Path, samples: list[np.ndarray], out_xml: Path, preset: str = "mixed",
                head_in_float: bool = True, edges_in_float: bool = False,
                fast_bias_correction: bool = True, activation_ranges: str = "minmax") -> None:
    """NNCF post-training quantization of `fp32_onnx` on `samples`; writes `out_xml` + `.bin`."""
    reason = nncf_available()
    if reason is not None:
        raise ModelError(f"cannot build the INT8 model: {reason}")
    QuantizeSettings.checked("preset", preset)  # the choices [quantize] declares
    QuantizeSettings.checked("activation_ranges", activation_ranges)
    if not samples:
        raise InputError("INT8 quantization needs at least one calibration image")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # convert_model (not read_model) applies OpenVINO's front-end fusions first: SiLU becomes one
    # Swish op that NNCF quantizes once, where the raw ONNX graph's Sigmoid*x gets two quantizers
    # and its shape subgraphs remain (the INT8 model then ran ~25 % slower at 640x384).
    model = ov.convert_model(str(fp32_onnx))
    input_name = model.inputs[0].get_any_name()
    patterns = (HEAD_FLOAT_PATTERNS if head_in_float else []) + (EDGE_FLOAT_PATTERNS if edges_in_float else [])
    ignored = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    nncf.set_log_level(logging.ERROR)  # its per-layer INFO lines would drown the command's output
    quantized = nncf.quantize(
        model, nncf.Dataset(samples, lambda x: {input_name: x}), subset_size=len(samples),
        preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=ignored, fast_bias_correction=fast_bias_correction,
        advanced_parameters=(AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM)
            if activation_ranges == "histogram" else None))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)


def _versions() -> dict[str, str]:
    import nncf
    import openvino as ov

    return {"nncf": nncf.__version__, "openvino": ov.__version__.split("-")[0]}


def recipe_settings(config: Settings) -> dict[str, Any]:
    """The `[quantize]` settings that shape the INT8 model (a change makes a cached one stale)."""
    cfg = config.quantize
    return {"preset": cfg.preset, "head_in_float": cfg.head_in_float, "edges_in_float": cfg.edges_in_float,
            "fast_bias_correction": cfg.fast_bias_correction, "activation_ranges": cfg.activation_ranges}


def int8_problems(card: ModelCard, directory: Path, config: Settings | None = None) -> list[str]:
    """Why the card's INT8 model cannot be used as it is (empty = usable); with `config`, also
    when it was built with other `[quantize]` settings."""
    entry = card.extra.get(INT8_KEY)
    if entry is None:
        return ["no INT8 model"]
    problems = []
    for key, digest_key in (("file", "sha256"), ("weights", "weights_sha256")):
        name, digest = entry.get(key), entry.get(digest_key)
        if not name or not (directory / name).is_file() or sha256_file(directory / name) != digest:
            problems.append(f"{name or key} missing or damaged")
    quant = entry.get("quantization", {})
    fp32 = card.files.get(FP32_VARIANT, {}).get("sha256")
    if quant.get("from_sha256") != fp32:
        problems.append("made from another FP32 model")
    if quant.get("recipe") != RECIPE:
        problems.append(f"recipe {quant.get('recipe')} is not {RECIPE}")
    if config is not None and quant.get("settings") != recipe_settings(config):
        problems.append("built with other [quantize] settings")
    return problems


def build_int8(config: Settings, card: ModelCard, directory: Path, calibration: Path | None = None,
               count: int | None = None, demo: DemoFrames | None = None) -> ModelCard:
    """Quantize the card's FP32 dynamic model into `directory` and record it in the card
    (`calibration` None: the default data, with the demo-clip frames `demo` gives)."""
    cfg = config.quantize
    count = cfg.images if count is None else QuantizeSettings.checked("images", count)
    if calibration is None:
        images, source = default_calibration(config, demo)
    else:
        images, source = user_calibration(calibration, count)
    images = images[:count]
    pad = int(card.input.get("letterbox_pad", 114))
    samples = network_inputs(images, config.detector.input_size, pad)
    fp32 = card.file(directory, FP32_VARIANT)
    stem = Path(card.files[FP32_VARIANT]["file"]).stem + "-int8"
    log.info("quantizing %s to INT8 on %d calibration images (%s) ...", fp32.name, len(samples), source)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".int8-") as tmp:
        out = Path(tmp) / f"{stem}.xml"
        quantize_ir(fp32, samples, out, cfg.preset, cfg.head_in_float, cfg.edges_in_float,
                    cfg.fast_bias_correction, cfg.activation_ranges)
        for suffix in (".xml", ".bin"):
            shutil.move(str(out.with_suffix(suffix)), directory / f"{stem}{suffix}")
    card.extra[INT8_KEY] = {
        "file": f"{stem}.xml", "sha256": sha256_file(directory / f"{stem}.xml"),
        "weights": f"{stem}.bin", "weights_sha256": sha256_file(directory / f"{stem}.bin"),
        "input_shape": card.files[FP32_VARIANT]["input_shape"], "format": "openvino-ir",
        "quantization": {"recipe": RECIPE, "from_sha256": card.files[FP32_VARIANT]["sha256"],
                         "calibration": {"source": source, "count": len(samples)},
                         "settings": recipe_settings(config), **_versions()},
    }
    card.save(directory)
    return card


def ensure_int8(config: Settings, card: ModelCard, directory: Path, demo: DemoFrames | None = None) -> ModelCard:
    """Keep a usable INT8 model (whatever its calibration); rebuild it on the default data when stale."""
    problems = int8_problems(card, directory, config)
    if not problems:
        log.info("INT8 model of %s is prepared and intact", card.name)
        return card
    log.info("INT8 model of %s: %s; building it", card.name, ", ".join(problems))
    return build_int8(config, card, directory, demo=demo)

