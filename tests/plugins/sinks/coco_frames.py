"""FrameResults built from the shared COCO ground truth (real images, real keypoints), for sink tests.
Also imported by the SIGKILL test's child process, so both sides build identical frames."""
from __future__ import annotations

import json

import cv2
import numpy as np

from posestream.stream.core.config import shared_dir
from posestream.stream.core.results import FrameResult, Poses

COCO = shared_dir() / "data" / "coco"


def coco_poses() -> list[tuple[str, Poses]]:
    """(file name, persons) per annotated image; keypoint score 0.9 visible, 0.5 occluded, 0 unlabelled;
    track ids 1..N per image."""
    gt = json.loads((COCO / "person_keypoints.json").read_text())
    out = []
    for image in sorted(gt["images"], key=lambda im: im["file_name"]):
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and a["num_keypoints"] > 0]
        kpts = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), 17, 3)
        kpts[:, :, 2] = np.select([kpts[:, :, 2] == 2, kpts[:, :, 2] == 1], [0.9, 0.5], 0.0)
        scores = kpts[:, :, 2].mean(axis=1)
        out.append((image["file_name"], Poses(np.array([a["bbox"] for a in anns]), np.ones(len(anns)),
                                              kpts, scores, np.arange(1, len(anns) + 1))))
    return out


def image_results(stream: str = "images") -> list[tuple[FrameResult, np.ndarray]]:
    """One FrameResult per COCO image (an image source: image_id = file name) with its BGR pixels."""
    results = []
    for frame, (name, poses) in enumerate(coco_poses()):
        pixels = cv2.imread(str(COCO / "images" / name))
        results.append((FrameResult(stream, frame, pixels.shape[1], pixels.shape[0], poses,
                                    image_id=name), pixels))
    return results


def video_results(count: int, stream: str = "cam0", fps: float = 15.0,
                  size: tuple[int, int] = (640, 480)) -> list[tuple[FrameResult, np.ndarray]]:
    """`count` frames of a video-like stream (pts at `fps`) cycling through the COCO persons, each on
    its image cropped/padded to `size` so every frame has one size."""
    width, height = size
    poses = coco_poses()
    results = []
    for frame in range(count):
        name, persons = poses[frame % len(poses)]
        pixels = np.zeros((height, width, 3), np.uint8)
        image = cv2.imread(str(COCO / "images" / name))[:height, :width]
        pixels[:image.shape[0], :image.shape[1]] = image
        results.append((FrameResult(stream, frame, width, height, persons, pts=frame / fps), pixels))
    return results
