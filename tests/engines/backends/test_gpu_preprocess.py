"""The torch pre-processing (used on the GPU with TensorRT) against the CPU path on real images.

References: `engines.preprocess.letterbox` / `to_input` (detector) and `engines.crops`
(SPPE crops), both OpenCV. Runs on CPU tensors here; the `gpu` tests repeat it on a CUDA device.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from posestream.engines import preprocess as cpu
from posestream.engines.backends.gpu_preprocess import (letterbox, normalize, upload_frames,
                                    warp_crops)
from posestream.engines import crops as cpu_crops
from posestream.stream.core.config import shared_dir
from posestream.stream.core.errors import InputError

torch.set_num_threads(1)
cv2.setNumThreads(1)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    paths = sorted((shared_dir() / "data" / "coco" / "images").glob("*.jpg"))[:3]
    assert paths, "shared evaluation images are missing"
    return [cv2.imread(str(p)) for p in paths]


def cv2_letterbox(image: np.ndarray, out_hw: tuple[int, int], pad: int = 114) -> np.ndarray:
    return cpu.letterbox(image, out_hw, pad)[0]


@pytest.mark.parametrize("out_hw", [(640, 640), (320, 320), (384, 640), (256, 192)])
def test_letterbox_matches_opencv(images, out_hw):
    for image in images:
        canvas, scale, (pad_x, pad_y) = letterbox(upload_frames(image, "cpu"), out_hw)
        ref = cv2_letterbox(image, out_hw).astype(np.float32)
        got = canvas[0].permute(1, 2, 0).numpy()
        assert got.shape == ref.shape
        diff = np.abs(got - ref)
        # OpenCV interpolates uint8 in fixed point; torch in float, then rounds: off by one at most.
        assert diff.max() <= 1.0, f"{out_hw}: max difference {diff.max()}"
        assert diff.mean() < 0.25
        box = cpu.letterbox(image, out_hw, 114)[1]
        assert (scale, float(pad_x), float(pad_y)) == (box.scale, box.pad_x, box.pad_y)
        # The padding is exactly where the CPU path puts it (same canvas geometry, to the pixel).
        assert (got[:pad_y] == 114).all() and (got[:, :pad_x] == 114).all()


def test_detector_input_matches_to_input(images):
    """Letterbox + normalize on torch == letterbox + to_input on numpy (the detector's input)."""
    hw = cpu.canvas_size(*images[1].shape[:2], 640)
    canvas, _, _ = letterbox(upload_frames(images[1], "cpu"), hw)
    got = normalize(canvas).numpy()
    ref = cpu.to_input([cpu.letterbox(images[1], hw, 114)[0]])
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.abs(got - ref).max() <= 1.0 / 255 + 1e-6


def test_letterbox_batch_of_frames_equals_one_by_one(images):
    frame = images[0]
    other = cv2.flip(frame, 1)
    batch, _, _ = letterbox(upload_frames([frame, other], "cpu"), (320, 320))
    single, _, _ = letterbox(upload_frames(other, "cpu"), (320, 320))
    assert torch.equal(batch[1], single[0])


def test_normalize_matches_numpy(images):
    canvas, _, _ = letterbox(upload_frames(images[0], "cpu"), (320, 320))
    mean, std = (0.406, 0.457, 0.480), (0.225, 0.224, 0.229)
    got = normalize(canvas, 1 / 255, mean, std, bgr_to_rgb=True)[0].numpy()
    ref_hwc = cv2_letterbox(images[0], (320, 320))[:, :, ::-1].astype(np.float32) / 255
    ref = ((ref_hwc - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, atol=5 / 255 / 0.224)  # within one 8-bit level per pixel
    assert np.abs(got - ref).mean() < 0.01


def person_crop_matrix(center: tuple[float, float], scale: float, angle_deg: float,
                       out_hw: tuple[int, int]) -> np.ndarray:
    """Frame -> crop map: rotate by `angle` and zoom by `scale` about `center`, centre it in the crop."""
    matrix = cv2.getRotationMatrix2D(center, angle_deg, scale)
    matrix[:, 2] += np.array([out_hw[1] / 2, out_hw[0] / 2]) - np.array(center)
    return matrix


CROP_CASES = [  # (center, scale, angle) - the last ones reach outside the frame
    ((240.0, 300.0), 1.0, 0.0),
    ((150.5, 220.25), 0.6, 0.0),
    ((200.0, 320.0), 1.7, 25.0),
    ((10.0, 15.0), 0.8, -10.0),
    ((470.0, 630.0), 2.5, 90.0),
]


@pytest.mark.parametrize("border", [0.0, 114.0])
def test_warp_crops_match_opencv(images, border):
    out_hw = (256, 192)
    frames = upload_frames([cv2.resize(im, (480, 640)) for im in images], "cpu")
    matrices, index, refs = [], [], []
    for i, (center, scale, angle) in enumerate(CROP_CASES):
        f = i % len(images)
        matrix = person_crop_matrix(center, scale, angle, out_hw)
        matrices.append(matrix)
        index.append(f)
        refs.append(cv2.warpAffine(frames[f].numpy(), matrix, (out_hw[1], out_hw[0]),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=(border,) * 3))
    crops = warp_crops(frames, np.stack(matrices), index, out_hw, border_value=border)
    assert crops.shape == (len(CROP_CASES), 3, *out_hw) and crops.dtype == torch.float32
    for crop, ref in zip(crops, refs):
        diff = np.abs(crop.permute(1, 2, 0).numpy() - ref.astype(np.float32))
        # OpenCV rounds to uint8 and uses 1/32-pixel fixed-point coordinates: small value noise only.
        assert diff.mean() < 0.6, diff.mean()
        assert np.percentile(diff, 99.9) < 4.0


@pytest.mark.parametrize("center,scale,angle", CROP_CASES[:3])
def test_warp_crops_put_a_landmark_within_one_pixel(center, scale, angle):
    """Geometry, independent of intensity rounding: a bright dot lands where the matrix says."""
    out_hw = (256, 192)
    frame = np.zeros((640, 480, 3), np.uint8)
    dot = (center[0] + 17.0, center[1] - 23.0)
    cv2.circle(frame, (round(dot[0]), round(dot[1])), 3, (255, 255, 255), -1)
    matrix = person_crop_matrix(center, scale, angle, out_hw)
    crop = warp_crops(upload_frames(frame, "cpu"), matrix[None], [0], out_hw)[0, 0].numpy()
    ref = cv2.warpAffine(frame, matrix, (out_hw[1], out_hw[0]))[:, :, 0].astype(np.float32)
    expected = matrix @ np.array([round(dot[0]), round(dot[1]), 1.0])

    def centroid(img: np.ndarray) -> np.ndarray:
        ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
        return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()

    assert np.abs(centroid(crop) - expected).max() < 1.0
    assert np.abs(centroid(crop) - centroid(ref)).max() < 1.0


def test_person_crops_match_the_cpu_sppe_crops(shared):
    """Real detector boxes of a real image: the same crops as `engines.crops.warp_crops`."""
    out_hw = (256, 192)
    detections = json.loads((shared / "data/coco/person_detections_AP_H_56.json").read_text())
    by_image: dict[int, list] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det["bbox"])
    image_id, boxes = max(by_image.items(), key=lambda item: len(item[1]))
    frame = cv2.imread(str(shared / f"data/coco/images/{image_id:012d}.jpg"))
    ref_crops, matrices = cpu_crops.warp_crops(frame, np.array(boxes), out_hw)
    centres, scales = cpu_crops.box_to_centre_scale(np.array(boxes), out_hw[1] / out_hw[0])
    np.testing.assert_array_equal(cpu_crops.crop_matrices(centres, scales, out_hw), matrices)
    crops = warp_crops(upload_frames(frame, "cpu"), matrices, [0] * len(boxes), out_hw)
    assert crops.shape == (len(boxes), 3, *out_hw)
    diff = np.abs(crops.permute(0, 2, 3, 1).numpy() - ref_crops.astype(np.float32))
    assert diff.mean() < 0.6 and np.percentile(diff, 99.9) < 4.0, (diff.mean(), diff.max())


def test_warp_crops_empty_and_errors(images):
    frames = upload_frames(images[0], "cpu")
    assert warp_crops(frames, np.zeros((0, 2, 3)), [], (64, 48)).shape == (0, 3, 64, 48)


BAD_CALLS = [  # (description, call) -> InputError
    ("matrix shape", lambda f: warp_crops(f, np.zeros((1, 3, 3)), [0], (64, 48))),
    ("index length", lambda f: warp_crops(f, np.eye(2, 3)[None], [0, 0], (64, 48))),
    ("index range", lambda f: warp_crops(f, np.eye(2, 3)[None], [1], (64, 48))),
    ("singular", lambda f: warp_crops(f, np.zeros((1, 2, 3)), [0], (64, 48))),
    ("float frames", lambda f: letterbox(f.float(), (64, 64))),
    ("zero size", lambda f: letterbox(f, (0, 64))),
]


@pytest.mark.parametrize("what,call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_one_clear_error(images, what, call):
    with pytest.raises(InputError):
        call(upload_frames(images[0], "cpu"))


@pytest.mark.parametrize("frames", [
    [np.zeros((4, 4), np.uint8)], [np.zeros((4, 4, 3), np.float32)],
    [np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], [],
])
def test_upload_rejects_bad_frames(frames):
    with pytest.raises(InputError):
        upload_frames(frames, "cpu")
