"""Import an AlphaPose FastPose checkpoint: state dict -> our FastPose -> verified ONNX + model card.

The checkpoint is read only through the allow-list loader (`engines.checkpoint.load_checkpoint`), so a
hostile pickle never runs code. AlphaPose's `scripts/train.py` saves `model.module.state_dict()`, a
plain mapping of tensor names to tensors; files saved from a `DataParallel` wrapper carry a `module.`
prefix on every key, which is stripped here. Loading is strict: any missing, unexpected or
wrongly-shaped tensor is one `ModelError` that lists them.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from posestream.engines.checkpoint import load_checkpoint
from posestream.engines.families.heatmap.fastpose import HEATMAP_STRIDE, INPUT_SIZE, JOINTS_BY_FORMAT, FastPose
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.model_check import check_model_kind
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.stream.core.errors import ConfigError, InputNotFoundError, ModelError

log = logging.getLogger(__name__)

# AlphaPose's SimpleTransform: RGB crop / 255, then these per-channel values subtracted; no std division.
ALPHAPOSE_MEAN = (0.406, 0.457, 0.480)
# AlphaPose's `_box_to_center_scale` widens the person box by this factor before cropping.
BOX_SCALE = 1.25
LICENCE = ("AlphaPose Software License Agreement (Shanghai Jiao Tong University): academic or "
           "non-profit noncommercial research use only; no redistribution")
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
_LIST_LIMIT = 6
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" ... ({len(items)} in all)" if len(items) > _LIST_LIMIT else "")


def read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name, read through the allow-list loader, `module.` prefix removed."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputNotFoundError(f"checkpoint not found: {checkpoint}")
    obj = load_checkpoint(checkpoint)
    if not isinstance(obj, Mapping):
        raise ModelError(f"checkpoint {checkpoint} holds a {type(obj).__name__}, not a state dict "
                         "(a mapping of tensor names to tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"checkpoint {checkpoint} is not a plain state dict: entries that are not "
                         f"named tensors: {_listing(bad)}")
    state = dict(obj)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _check_format(fmt: str) -> int:
    """Heatmap channels for `fmt`; a `ConfigError` listing the formats FastPose heads exist for."""
    if fmt not in JOINTS_BY_FORMAT:
        raise ConfigError(f"unknown FastPose keypoint format '{fmt}' (valid: {', '.join(JOINTS_BY_FORMAT)})")
    return JOINTS_BY_FORMAT[fmt]


def _head_hint(state: Mapping[str, torch.Tensor], fmt: str) -> str:
    """Say which format the checkpoint's head was trained for, when it differs from `fmt`."""
    head = state.get("conv_out.weight")
    if head is None or head.dim() != 4:
        return ""
    joints = int(head.shape[0])
    if joints == JOINTS_BY_FORMAT[fmt]:
        return ""
    fits = [name for name, count in JOINTS_BY_FORMAT.items() if count == joints]
    advice = f"; use format '{fits[0]}'" if fits else ""
    return (f"the checkpoint's head predicts {joints} joints but format '{fmt}' has "
            f"{JOINTS_BY_FORMAT[fmt]}{advice}. ")


def build_fastpose(state: Mapping[str, torch.Tensor], fmt: str, origin: str = "checkpoint") -> FastPose:
    """Our FastPose for `fmt`, loaded strictly from `state` and set to eval mode.

    `num_batches_tracked` counters may be absent (checkpoints written before PyTorch 0.4.1 lack them);
    they play no part in inference. Everything else must match name, shape and kind exactly.
    """
    model = FastPose(_check_format(fmt))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    wrong += [f"{k} is {state[k].dtype} (expected a floating-point tensor)"
              for k in expected if k in state and expected[k].is_floating_point()
              and not state[k].is_floating_point()]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {_listing(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mismatched", wrong)) if keys]
        raise ModelError(f"{origin} is not an AlphaPose FastPose-ResNet-50 for '{fmt}': "
                         f"{_head_hint(state, fmt)}" + "; ".join(parts))
    nonfinite = [k for k in expected if k in state and state[k].is_floating_point()
                 and not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise ModelError(f"{origin} has NaN or infinite values in: {_listing(nonfinite)}")
    full = {k: state[k].to(v.dtype) if k in state else v for k, v in expected.items()}
    model.load_state_dict(full, strict=True)
    return model.eval()


def export_onnx(model: FastPose, path: Path, opset: int = 17) -> None:
    """ONNX with a dynamic batch axis: `input` [B, 3, 256, 192] -> `heatmaps` [B, K, 64, 48]."""
    dummy = torch.zeros(1, 3, *INPUT_SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript;
        # its output is plain opset-17 ONNX that ONNX Runtime and TensorRT both parse.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)


def verify_export(model: FastPose, engine: OnnxRuntimeEngine, tolerance: float = 1e-4,
                  batch: int = 2) -> float:
    """Largest |ONNX - torch| on a seeded, AlphaPose-normalised random batch; a `ModelError` when it
    exceeds `tolerance` times the output scale (at least 1). Batch 2 checks the dynamic axis, since
    the export traced batch 1."""
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor(ALPHAPOSE_MEAN).view(1, 3, 1, 1)
    x = torch.rand(batch, 3, *INPUT_SIZE, generator=generator) - mean
    with torch.no_grad():
        expected = model(x).numpy()
    got = engine.run({INPUT_NAME: x.numpy()})[OUTPUT_NAME]
    if got.shape != expected.shape:
        raise ModelError(f"ONNX export gives {list(got.shape)}, torch gives {list(expected.shape)}")
    diff = float(np.abs(got - expected).max())
    allowed = tolerance * max(1.0, float(np.abs(expected).max()))
    if not diff <= allowed:  # also catches NaN
        raise ModelError(f"ONNX export {engine.model_path.name} differs from torch by {diff:.3g} "
                         f"(allowed {allowed:.3g})")
    return diff


def make_card(name: str, fmt: str, onnx_file: Path, checkpoint: Path, opset: int) -> ModelCard:
    return ModelCard(
        name=name, task="pose-heatmap", keypoint_format=fmt,
        files={"dynamic": {"file": onnx_file.name, "sha256": sha256_file(onnx_file),
                           "input_shape": [None, 3, *INPUT_SIZE]}},
        input={"size": list(INPUT_SIZE), "layout": "NCHW", "color": "RGB", "scale": 1 / 255,
               "mean": list(ALPHAPOSE_MEAN), "std": [1.0, 1.0, 1.0], "box_scale": BOX_SCALE,
               "name": INPUT_NAME},
        output={"decoder": "heatmap", "stride": HEATMAP_STRIDE, "name": OUTPUT_NAME,
                "num_keypoints": JOINTS_BY_FORMAT[fmt]},
        licence=LICENCE,
        source={"kind": "alphapose-fastpose", "checkpoint": str(checkpoint.resolve()),
                "sha256": sha256_file(checkpoint), "architecture": "FastPose SE-ResNet-50 + DUC"},
        extra={"opset": opset})


def import_alphapose_fastpose(checkpoint: Path, fmt: str, home: Path, name: str | None = None, *,
                              opset: int = 17, threads: int = 2, tolerance: float = 1e-4) -> Path:
    """Import an AlphaPose FastPose-ResNet-50 checkpoint into the model cache; returns the model dir.

    The export is checked against the card's declared kind and against torch (`verify_export`)
    before anything lands in `home/models/<name>/`; a failed import leaves the cache as it was.
    """
    checkpoint = Path(checkpoint)
    _check_format(fmt)
    name = name or f"alphapose-fastpose-res50-{fmt}"
    if not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"model name '{name}' must be letters, digits, '.', '_' or '-', "
                          "not starting with a punctuation mark")
    model = build_fastpose(read_state_dict(checkpoint), fmt, origin=f"checkpoint {checkpoint}")
    models = Path(home) / "models"
    models.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models))
    try:
        onnx_file = staging / f"{name}.onnx"
        log.info("exporting %s (%s) to ONNX opset %d", checkpoint, fmt, opset)
        export_onnx(model, onnx_file, opset)
        card = make_card(name, fmt, onnx_file, checkpoint, opset)
        with OnnxRuntimeEngine(onnx_file, threads=threads) as engine:
            check_model_kind(engine, card)
            diff = verify_export(model, engine, tolerance)
        card.extra["onnx_vs_torch_max_abs_diff"] = diff
        card.save(staging)
        target = models / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("imported %s as %s (ONNX vs torch max |diff| %.3g)", checkpoint, target, diff)
    return target
