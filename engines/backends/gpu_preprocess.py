"""Pre-processing in torch, so frames are uploaded to the GPU once and crops never come back.

The CPU path (`engines.preprocess`, `engines.crops`) works on numpy with OpenCV; these are the
same operations on torch tensors, for the TensorRT backend. They also run on CPU tensors, which is
how the tests compare them with the OpenCV versions on machines without a GPU.

Conventions shared with OpenCV, so both paths agree:
- pixel centres sit at integer coordinates; bilinear resizing uses half-pixel centres
  (`cv2.INTER_LINEAR` == `interpolate(..., align_corners=False)` without antialiasing);
- affine matrices are 2x3 *frame -> crop* maps, exactly what `cv2.warpAffine` takes;
- outside the frame a crop takes `border_value` (`cv2.BORDER_CONSTANT`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from posestream.stream.core.errors import InputError


def _check_host_frames(frames: Sequence[np.ndarray]) -> None:
    if not frames:
        raise InputError("no frames to upload")
    first = frames[0]
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frames must be HxWx3 uint8, got {frame.shape} {frame.dtype}")
        if frame.shape != first.shape:
            raise InputError(f"frames in one upload must share a size: {first.shape} vs {frame.shape}")


class PinnedStaging:
    """Reusable page-locked host buffers, one per batch shape, for uploads to one CUDA device.

    Frames are copied once, from wherever they are (a shared-memory ring) into the pinned buffer,
    and go to the GPU with an asynchronous copy. Allocating pinned memory per batch (what
    `Tensor.pin_memory()` does) costs more than the copy itself for 1080p batches, hence the reuse.
    An event per buffer keeps a buffer from being refilled before its previous upload has finished.
    """

    def __init__(self, device: torch.device, max_buffers: int = 8) -> None:
        self.device = device
        self.max_buffers = max_buffers
        self._buffers: dict[tuple[int, ...], tuple[torch.Tensor, torch.cuda.Event]] = {}

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        shape = (len(frames), *frames[0].shape)
        entry = self._buffers.get(shape)
        if entry is None:
            if len(self._buffers) >= self.max_buffers:
                self._buffers.pop(next(iter(self._buffers)))  # the oldest shape makes room
            entry = self._buffers[shape] = (torch.empty(shape, dtype=torch.uint8, pin_memory=True),
                                            torch.cuda.Event())
        host, done = entry
        done.synchronize()  # the previous upload from this buffer has left it
        view = host.numpy()
        for i, frame in enumerate(frames):
            view[i] = frame
        device_frames = host.to(self.device, non_blocking=True)
        done.record(torch.cuda.current_stream(self.device))
        return device_frames


def upload_frames(frames: Sequence[np.ndarray] | np.ndarray, device: str | torch.device,
                  staging: PinnedStaging | None = None) -> torch.Tensor:
    """Stack same-sized HxWx3 uint8 frames into one [F, H, W, 3] uint8 tensor on `device`.

    On CUDA with `staging`, the frames are copied once into a reused pinned buffer and uploaded
    asynchronously; without it, pinned memory + a non-blocking copy per call.
    """
    if isinstance(frames, np.ndarray):
        frames = [frames] if frames.ndim == 3 else list(frames)
    _check_host_frames(frames)
    device = torch.device(device)
    if device.type == "cuda" and staging is not None:
        return staging.upload(frames)
    host = torch.from_numpy(np.ascontiguousarray(np.stack(frames)))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise InputError(f"frames must be a [F, H, W, 3] uint8 tensor, got {tuple(frames.shape)} "
                         f"{frames.dtype}")


def letterbox_geometry(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Scale, resized (w, h) and top-left padding (pad_x, pad_y) of a centred letterbox."""
    (h, w), (out_h, out_w) = src_hw, out_hw
    if min(h, w, out_h, out_w) <= 0:
        raise InputError(f"letterbox needs positive sizes, got frame {src_hw} -> {out_hw}")
    scale = min(out_h / h, out_w / w)
    new_w, new_h = min(out_w, max(1, round(w * scale))), min(out_h, max(1, round(h * scale)))
    return scale, (new_w, new_h), ((out_w - new_w) // 2, (out_h - new_h) // 2)


def letterbox(frames: torch.Tensor, out_hw: tuple[int, int], pad: int = 114
              ) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Resize [F, H, W, 3] uint8 BGR frames into centred `out_hw` canvases filled with `pad`.

    Returns float32 [F, 3, out_h, out_w] BGR canvases in 0..255, rounded to integers like the uint8
    canvas of the CPU path, plus the scale and (pad_x, pad_y) that map boxes back to the frame.
    """
    _check_frames(frames)
    scale, (new_w, new_h), (pad_x, pad_y) = letterbox_geometry(tuple(frames.shape[1:3]), out_hw)
    images = frames.permute(0, 3, 1, 2).float()
    if (new_h, new_w) != tuple(frames.shape[1:3]):
        images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False,
                               antialias=False).round_().clamp_(0, 255)
    canvas = images.new_full((frames.shape[0], 3, out_hw[0], out_hw[1]), float(pad))
    canvas[:, :, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = images
    return canvas, scale, (pad_x, pad_y)


def normalize(images: torch.Tensor, scale: float = 1 / 255, mean: Sequence[float] = (0.0, 0.0, 0.0),
              std: Sequence[float] = (1.0, 1.0, 1.0), bgr_to_rgb: bool = True,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(image * scale - mean) / std per channel on [N, 3, H, W] 0..255 images, as the model card says."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"normalize expects [N, 3, H, W], got {tuple(images.shape)}")
    if bgr_to_rgb:
        images = images.flip(1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return ((images * scale - mean_t) / std_t).to(dtype).contiguous()


def _crop_grid(matrices: torch.Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int]) -> torch.Tensor:
    """Sampling grid [N, h, w, 2] in grid_sample's normalised coordinates for frame->crop maps."""
    out_h, out_w = out_hw
    src_h, src_w = src_hw
    m = matrices.to(torch.float64)
    linear = torch.linalg.inv(m[:, :, :2])                       # crop -> frame, linear part
    shift = -(linear @ m[:, :, 2:]).squeeze(-1)                 # crop -> frame, translation
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=m.device),
                            torch.arange(out_w, dtype=torch.float64, device=m.device), indexing="ij")
    dst = torch.stack([xs, ys], dim=-1).view(1, -1, 2)          # [1, h*w, (x, y)]
    src = dst @ linear.transpose(1, 2) + shift.unsqueeze(1)     # [N, h*w, (u, v)] frame pixels
    size = torch.tensor([src_w, src_h], dtype=torch.float64, device=m.device)
    grid = (2 * src + 1) / size - 1                             # pixel centre -> align_corners=False
    return grid.view(-1, out_h, out_w, 2).to(torch.float32)


def warp_crops(frames: torch.Tensor, matrices: np.ndarray | torch.Tensor,
               frame_index: Sequence[int] | np.ndarray | torch.Tensor, out_hw: tuple[int, int],
               border_value: float = 0.0) -> torch.Tensor:
    """Affine crops of many persons from a batch of frames, like `cv2.warpAffine` per crop.

    `frames`: [F, H, W, 3] uint8 (BGR, on the GPU: uploaded once); `matrices`: [N, 2, 3] frame->crop;
    `frame_index`: [N] frame of each crop. Returns float32 [N, 3, h, w] in 0..255, same channel
    order as the frames, rounded to integers like OpenCV's uint8 crops (models are sensitive to
    the sub-level difference: unrounded crops moved yolo-crop keypoints by up to 4 px). All crops of one frame are sampled in one `grid_sample` call over a tall
    grid (crops stacked vertically), so no frame is ever copied once per person.
    """
    _check_frames(frames)
    mats = torch.as_tensor(np.asarray(matrices) if not isinstance(matrices, torch.Tensor) else matrices)
    index = torch.as_tensor(np.asarray(frame_index) if not isinstance(frame_index, torch.Tensor)
                            else frame_index).to(torch.long).cpu()
    if mats.ndim != 3 or mats.shape[1:] != (2, 3):
        raise InputError(f"crop matrices must be [N, 2, 3], got {tuple(mats.shape)}")
    if index.shape != (mats.shape[0],):
        raise InputError(f"frame_index must have one entry per matrix ({mats.shape[0]}), "
                         f"got shape {tuple(index.shape)}")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= frames.shape[0]):
        raise InputError(f"frame_index out of range for {frames.shape[0]} frames")
    out_h, out_w = out_hw
    crops = torch.empty((mats.shape[0], 3, out_h, out_w), dtype=torch.float32, device=frames.device)
    if mats.shape[0] == 0:
        return crops
    if torch.linalg.matrix_rank(mats[:, :, :2].to(torch.float64)).min() < 2:
        raise InputError("a crop matrix is singular (zero-sized box?)")
    grids = _crop_grid(mats.to(frames.device), out_hw, tuple(frames.shape[1:3]))
    for f in torch.unique(index).tolist():
        rows = torch.nonzero(index == f).flatten()
        image = frames[f].permute(2, 0, 1).unsqueeze(0).float()
        if border_value:
            image = image - border_value  # zero padding of (image - b), then + b == constant border b
        tall = grids[rows.to(frames.device)].reshape(1, len(rows) * out_h, out_w, 2)
        sampled = F.grid_sample(image, tall, mode="bilinear", padding_mode="zeros", align_corners=False)
        if border_value:
            sampled = sampled + border_value
        crops[rows.to(frames.device)] = sampled.view(3, len(rows), out_h, out_w).transpose(0, 1)
    return crops.round_()
