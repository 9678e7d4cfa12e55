"""The heatmap plugin on a real SPPE architecture: our FastPose (AlphaPose ResNet-50 + DUC), exported
and carded by `engines.families.heatmap.fastpose_import` exactly as `models import` does. No trained weights are
available offline, so the weights are seeded random: this proves that the importer's card and the
plugin agree (input size, AlphaPose normalisation, output name, stride) and that the plugin's
pre-processing + ONNX + decoding equal an independent torch computation; it says nothing about accuracy.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posestream.engines.families.heatmap.fastpose import FastPose
from posestream.engines.families.heatmap.fastpose_import import ALPHAPOSE_MEAN, export_onnx, make_card
from posestream.engines.crops import crop_to_frame, warp_crops
from posestream.engines.families.heatmap.decode import decode_heatmaps
from posestream.engines.families.heatmap.pose import HeatmapPose
from posestream.stream.core.config import load_config
from posestream.stream.core.results import Poses

pytestmark = pytest.mark.slow  # ResNet-50 export: ~15 s on two shared cores


@pytest.fixture(scope="module")
def fastpose(tmp_path_factory):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = FastPose(17).eval()
    home = tmp_path_factory.mktemp("home")
    directory = home / "models" / "fastpose-seeded"
    directory.mkdir(parents=True)
    export_onnx(model, directory / "fastpose-seeded.onnx")
    checkpoint = directory / "seeded.pth"  # the card records a source checkpoint; none exists here
    checkpoint.write_bytes(b"seeded random weights, torch.manual_seed(0)")
    make_card("fastpose-seeded", "coco17", directory / "fastpose-seeded.onnx", checkpoint, 17).save(directory)
    return model, home


def test_plugin_equals_torch_reference(fastpose, shared: Path):
    model, home = fastpose
    image = cv2.imread(str(shared / "data/coco/images/000000197388.jpg"))
    boxes = np.array([[139.41, 102.25, 222.39, 241.57], [287.17, 61.52, 74.88, 165.61],
                      [540.04, 48.81, 99.96, 223.36]])
    detections = Poses(boxes, [0.9, 0.8, 0.7], np.zeros((3, 0, 3)), [0.9, 0.8, 0.7])
    config = load_config(overrides={"paths.home": str(home), "pose.model": "fastpose-seeded",
                                    "pose.threads": 2, "pose.batch": 3})
    crops, matrices = warp_crops(image, boxes, (256, 192), 1.25)
    with HeatmapPose(config) as sppe:
        assert sppe.input_hw == (256, 192)
        result = sppe.estimate([image, image[:, ::-1].copy()], [detections, Poses.empty(0)])
        ours = sppe.infer(crops)["heatmaps"]
    assert [len(r) for r in result] == [3, 0]

    # Pre-processing + ONNX equal AlphaPose's normalisation through the torch model ...
    x = torch.from_numpy(crops[..., ::-1].transpose(0, 3, 1, 2) / 255.0 - np.reshape(ALPHAPOSE_MEAN, (1, 3, 1, 1)))
    with torch.no_grad():
        reference = model(x.float()).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4 * max(1.0, np.abs(reference).max()))
    # ... and the plugin's keypoints are those heatmaps decoded (stride 4) and mapped back to the frame.
    coords, scores = decode_heatmaps(ours, "none")
    np.testing.assert_allclose(result[0].keypoints[..., :2], crop_to_frame(coords * 4.0, matrices), atol=1e-3)
    np.testing.assert_allclose(result[0].keypoints[..., 2], scores, atol=1e-6)
