"""INT8 models: NNCF post-training quantization of the default model for OpenVINO.

The FP32 dynamic-shape ONNX model is read by OpenVINO, quantized by NNCF on letterboxed calibration
frames (`engines.calibration`), and saved as an OpenVINO IR (`.xml` + `.bin`) beside the ONNX files;
the model card's `extra["int8"]` (apart from `files`, which lists ONNX variants only) records the IR's
files and where it came from (the FP32 file's sha256, the calibration source and count, the recipe
and its settings, the NNCF and OpenVINO versions). `ensure_int8` rebuilds it when it is missing,
damaged, made from another FP32 file, by another recipe or with other settings; it keeps a model
calibrated on the user's own data (`--calibration`) while that model is current. The overflow fix
depends on the CPU that builds and runs the model (`int8_products_saturate`): a model built without
it (VNNI) is refused where INT8 sums saturate, and `models prepare` rebuilds it there.

Where the loss comes from and how the recipe was chosen: `benchmarks/int8_accuracy.py` and
docs/benchmarks.md.
"""
from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from posestream.engines.calibration import DemoFrames, default_calibration, network_inputs, user_calibration
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.stream.core.errors import InputError, ModelError
from posestream.stream.core.settings import QuantizeSettings, Settings

log = logging.getLogger(__name__)

INT8_KEY = "int8"  # card.extra[INT8_KEY]: the INT8 model of the FP32 variant below
FP32_VARIANT = "dynamic"
# Bumped whenever the quantization recipe changes, so cached INT8 models are rebuilt.
RECIPE = "nncf-ptq-v4"  # preset, float layers and bias correction are recorded beside it
# The head's decode arithmetic (DFL softmax/conv, anchor/stride Add/Sub/Mul/Div, score sigmoids) of
# our own YOLO11 export (`/model.23/...`, outside the cv2/cv3/cv4 conv branches) stays in float:
# quantizing pixel coordinates to 8 bits would cost keypoint accuracy for no speed.
HEAD_FLOAT_PATTERNS = [r".*/model\.23/(dfl/.*|Add.*|Sub.*|Mul.*|Div.*|Softmax.*|Sigmoid.*|Concat.*)"]
# The last convs of every head branch (box, score and keypoint values out, at each stride), counted
# from the output (`[quantize] outputs_in_float`): in INT8 their rounded inputs move the output
# values directly. The last 1x1 conv in float recovers three quarters of INT8's keypoint loss at no
# CPU cost, the conv before it some of the rest for ~8 % more (docs/benchmarks.md, "Build noise").
OUTPUT_FLOAT_PATTERNS = [r".*/model\.23/cv[234]\.\d/cv[234]\.\d\.2/Conv", r".*/model\.23/cv[234]\.\d/cv[234]\.\d\.1/.*Conv"]
# The backbone's attention block (C2PSA, `model.10`: MatMul/Softmax attention and its convs, at 1/32
# of the input's size, so float costs little time): its activations moved the person scores most.
ATTENTION_FLOAT_PATTERNS = [r".*/model\.10/.*"]


def nncf_available() -> str | None:
    """None when NNCF (needed only to build INT8 models) is importable, else how to get it."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "nncf is not installed (pip install nncf; posestream lists it as a dependency)"
    return None


@functools.cache
def int8_products_saturate() -> bool:
    """Whether OpenVINO's CPU plugin, here, adds INT8 products in 16 bits with saturation (CPUs
    without VNNI/AMX, or kernels capped by `ONEDNN_MAX_CPU_ISA`): one 1x1 convolution whose u8 x s8
    pairs (255 x 127, twice) overflow 16 bits is run, and its output compared with the exact sum.
    A functional probe, not a flag list, so it also holds for capped ISAs and other CPU families."""
    import openvino as ov
    import openvino.opset13 as ops

    channels, x, w = 16, np.float32(2.55), np.float32(1.27)  # u8 255 and s8 127 at scale 0.01
    image = ops.parameter([1, channels, 1, 1], np.float32, name="image")
    zero = ops.constant(np.float32(0))
    pixels = ops.fake_quantize(image, zero, ops.constant(x), zero, ops.constant(x), 256)
    low, high = ops.constant(np.float32(-1.28)), ops.constant(w)
    weights = ops.fake_quantize(ops.constant(np.full((1, channels, 1, 1), w, np.float32)), low, high, low, high, 256)
    conv = ops.convolution(pixels, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    compiled = ov.Core().compile_model(ov.Model([conv], [image]), "CPU", {"INFERENCE_NUM_THREADS": 1})
    out = float(compiled(np.full((1, channels, 1, 1), x, np.float32))[0].ravel()[0])
    return out < 0.9 * channels * float(x) * float(w)  # saturated pairs give about half


def built_overflow_fix(card: ModelCard) -> str:
    """The overflow fix the card's INT8 model was built with (cards from before the setting: NNCF's
    default, the first layer's)."""
    return card.extra.get(INT8_KEY, {}).get("quantization", {}).get("overflow_fix", "first_layer")


def overflow_fix(cfg: QuantizeSettings) -> str:
    """NNCF's overflow fix for the `[quantize] overflow_fix` setting: `auto` = the first layer's
    weights at 7 bits only where INT8 products saturate (`int8_products_saturate`), none elsewhere."""
    if cfg.overflow_fix != "auto":
        return cfg.overflow_fix
    return "first_layer" if int8_products_saturate() else "disable"


# -- quantization -------------------------------------------------------------------------------------

def float_patterns(cfg: QuantizeSettings) -> list[str]:
    """NNCF ignored-scope patterns of the `[quantize]` table: the layers kept in float."""
    return ((HEAD_FLOAT_PATTERNS if cfg.head_in_float else []) + OUTPUT_FLOAT_PATTERNS[:cfg.outputs_in_float]
            + (ATTENTION_FLOAT_PATTERNS if cfg.attention_in_float else []))


def _nncf_inputs(fp32_onnx: Path, samples: list[np.ndarray], cfg: QuantizeSettings) -> tuple[Any, Any, dict[str, Any]]:
    """The OpenVINO model, the calibration dataset and the keyword arguments of the `[quantize]`
    recipe, shared by plain post-training quantization and NNCF's accuracy-aware variant."""
    reason = nncf_available()
    if reason is not None:
        raise ModelError(f"cannot build the INT8 model: {reason}")
    if not samples:
        raise InputError("INT8 quantization needs at least one calibration image")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # convert_model (not read_model) applies OpenVINO's front-end fusions first: SiLU becomes one
    # Swish op that NNCF quantizes once, where the raw ONNX graph's Sigmoid*x gets two quantizers
    # and its shape subgraphs remain (the INT8 model then ran ~25 % slower at 640x384).
    model = ov.convert_model(str(fp32_onnx))
    input_name = model.inputs[0].get_any_name()
    nncf.set_log_level(logging.ERROR)  # its per-layer INFO lines would drown the command's output
    # The overflow fix (the first layer's weights at 7 bits) is for CPUs that add u8 x s8 products
    # in 16 bits (no VNNI): without it their first conv saturates (agreement with FP32 0.989 -> 0.902
    # mean OKS); with VNNI it only coarsens those weights (`overflow_fix`, docs/benchmarks.md).
    fix = {"first_layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}[overflow_fix(cfg)]
    advanced: dict[str, Any] = {"overflow_fix": fix}
    if cfg.activation_ranges == "histogram":
        advanced["activations_range_estimator_params"] = RangeEstimatorParametersSet.HISTOGRAM
    patterns = float_patterns(cfg)
    kwargs = {"subset_size": len(samples),
              "preset": nncf.QuantizationPreset.MIXED if cfg.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
              "ignored_scope": nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None,
              "fast_bias_correction": cfg.fast_bias_correction,
              "advanced_parameters": AdvancedQuantizationParameters(**advanced)}
    return model, nncf.Dataset(samples, lambda x: {input_name: x}), kwargs


def quantize_ir(fp32_onnx: Path, samples: list[np.ndarray], out_xml: Path, cfg: QuantizeSettings) -> None:
    """NNCF post-training quantization of `fp32_onnx` on `samples` by the `[quantize]` recipe `cfg`;
    writes `out_xml` + `.bin`."""
    import nncf
    import openvino as ov

    model, dataset, kwargs = _nncf_inputs(fp32_onnx, samples, cfg)
    ov.save_model(nncf.quantize(model, dataset, **kwargs), str(out_xml), compress_to_fp16=False)


def quantize_with_accuracy_control(fp32_onnx: Path, samples: list[np.ndarray], cfg: QuantizeSettings,
                                   validation: list[Any], validate: Any, max_drop: float,
                                   iterations: int) -> Any:
    """NNCF's accuracy-aware quantization with the `[quantize]` recipe: layers go back to float,
    most harmful first, until `validate(compiled_model, items) -> (metric, per-item values)` on
    `validation` (its items' first element is the network input) drops at most `max_drop` below
    FP32's, or `iterations` rounds are spent. Returns the OpenVINO model (benchmarks only)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model, dataset, kwargs = _nncf_inputs(fp32_onnx, samples, cfg)
    name = model.inputs[0].get_any_name()
    advanced = kwargs.pop("advanced_parameters")
    return nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(validation, lambda item: {name: item[0]}), validate,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=iterations),
        **kwargs)


def _versions() -> dict[str, str]:
    import nncf
    import openvino as ov

    return {"nncf": nncf.__version__, "openvino": ov.__version__.split("-")[0]}


def recipe_settings(config: Settings) -> dict[str, Any]:
    """The `[quantize]` settings that shape the INT8 model (a change makes a cached one stale);
    `overflow_fix` is recorded and checked on its own, since `auto` depends on the CPU."""
    cfg = config.quantize
    return {"preset": cfg.preset, "head_in_float": cfg.head_in_float, "outputs_in_float": cfg.outputs_in_float,
            "attention_in_float": cfg.attention_in_float, "fast_bias_correction": cfg.fast_bias_correction,
            "activation_ranges": cfg.activation_ranges}


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
    built_fix = built_overflow_fix(card)
    if built_fix == "disable" and int8_products_saturate():
        problems.append("built without the overflow fix (for CPUs with VNNI), but this CPU adds INT8 products "
                        "in 16 bits and would saturate")
    elif config is not None and config.quantize.overflow_fix not in ("auto", built_fix):
        problems.append(f"built with overflow_fix = {built_fix}, not {config.quantize.overflow_fix}")
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
    samples = network_inputs(images, config.detector.input_size, card.letterbox_pad)
    fp32 = card.file(directory, FP32_VARIANT)
    stem = Path(card.files[FP32_VARIANT]["file"]).stem + "-int8"
    log.info("quantizing %s to INT8 on %d calibration images (%s) ...", fp32.name, len(samples), source)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".int8-") as tmp:
        out = Path(tmp) / f"{stem}.xml"
        quantize_ir(fp32, samples, out, cfg)
        for suffix in (".xml", ".bin"):
            shutil.move(str(out.with_suffix(suffix)), directory / f"{stem}{suffix}")
    card.extra[INT8_KEY] = {
        "file": f"{stem}.xml", "sha256": sha256_file(directory / f"{stem}.xml"),
        "weights": f"{stem}.bin", "weights_sha256": sha256_file(directory / f"{stem}.bin"),
        "input_shape": card.files[FP32_VARIANT]["input_shape"], "format": "openvino-ir",
        "quantization": {"recipe": RECIPE, "from_sha256": card.files[FP32_VARIANT]["sha256"],
                         "calibration": {"source": source, "count": len(samples)},
                         "settings": recipe_settings(config), "overflow_fix": overflow_fix(cfg), **_versions()},
    }
    card.save(directory)
    return card


def ensure_int8(config: Settings, card: ModelCard, directory: Path, demo: DemoFrames | None = None) -> ModelCard:
    """Keep a usable INT8 model (whatever its calibration); rebuild it on the default data when stale,
    or, when it was calibrated on the default data, when `overflow_fix` resolves otherwise on this
    CPU (built for another CPU class; a model calibrated on the user's footage is kept, with a hint)."""
    problems = int8_problems(card, directory, config)
    quant = card.extra.get(INT8_KEY, {}).get("quantization", {})
    built_fix, wanted = built_overflow_fix(card), overflow_fix(config.quantize)
    if not problems and built_fix != wanted:
        reason = f"built with overflow_fix = {built_fix} where this CPU wants {wanted}"
        if quant.get("calibration", {}).get("source", "").startswith(config.quantize.assets_wheel):
            problems = [reason]
        else:
            log.info("INT8 model of %s: %s; kept, since it was calibrated on your data (rebuild it for this "
                     "CPU with `posestream models quantize %s --calibration ...`)", card.name, reason, card.name)
    if not problems:
        log.info("INT8 model of %s is prepared and intact", card.name)
        return card
    log.info("INT8 model of %s: %s; building it", card.name, ", ".join(problems))
    return build_int8(config, card, directory, demo=demo)

