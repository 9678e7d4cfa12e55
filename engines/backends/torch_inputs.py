"""Torch pre-processing for the detector and SPPE plugins: frames go to the engine's device once.

`engine.preprocess` picks the path: `auto` uses it when the engine runs on a GPU (TensorRT, or the
torch backend on CUDA; on the CPU, OpenVINO normalises the detector's uint8 canvases inside the
model instead, `Engine.accept_images`), `torch` forces it (on the CPU with ONNX Runtime: how the tests compare it with the numpy path), `numpy`
never uses it. On this path a plugin uploads each frame it is given once per call, letterboxes,
normalises and crops it there (`engines.backends.gpu_preprocess`), and feeds the engine device tensors
(`run_device`); only the model outputs come back to the host, for numpy decoding, in one copy per
batch (`rows_above`).

torch is imported only once this path is chosen: the import costs seconds and hundreds of MB in
each stage process, which the numpy path does not need.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from posestream.engines.backends.base import Engine
from posestream.engines.model_card import Normalisation
from posestream.engines.preprocess import Letterbox

if TYPE_CHECKING:
    import torch

def torch_inputs_for(mode: str, engine: Engine) -> "TorchInputs | None":
    """The torch pre-processing for `engine` per `engine.preprocess` (`mode`); None = the numpy path."""
    if mode == "numpy" or (mode == "auto" and gpu_device(engine) is None):
        return None
    return TorchInputs(engine)


def gpu_device(engine: Engine) -> "torch.device | None":
    """The CUDA device an engine runs on and takes device tensors for (`run_device`), else None."""
    return getattr(engine, "cuda", None) if engine.backend in ("tensorrt", "torch") else None


class TorchInputs:
    """Model inputs built in torch on the engine's device (the GPU for TensorRT and torch on CUDA,
    else the CPU)."""

    def __init__(self, engine: Engine) -> None:
        import torch

        self.engine = engine
        from posestream.engines.backends.gpu_preprocess import PinnedStaging

        cuda = gpu_device(engine)
        self.on_gpu = cuda is not None
        self.device = cuda if cuda is not None else torch.device("cpu")
        self.staging = PinnedStaging(cuda) if cuda is not None else None  # reused pinned host buffers

    def letterboxed(self, frames: Sequence[np.ndarray], out_hw: tuple[int, int], pad: int
                    ) -> tuple["torch.Tensor", Letterbox]:
        """Same-sized BGR frames -> the detector's float32 NCHW RGB 0..1 input, and its letterbox."""
        from posestream.engines.backends.gpu_preprocess import letterbox, normalize, upload_frames

        canvas, scale, (pad_x, pad_y) = letterbox(upload_frames(list(frames), self.device, self.staging),
                                                  out_hw, pad)
        return normalize(canvas), Letterbox(scale, float(pad_x), float(pad_y))

    def crops(self, frames: Sequence[np.ndarray], matrices: Sequence[np.ndarray],
              out_hw: tuple[int, int]) -> "torch.Tensor":
        """Crops float32 [N, 3, h, w] BGR 0..255 of every frame's persons (`matrices[i]`: frame
        i's [n_i, 2, 3] frame->crop maps); each frame is uploaded once, whatever its crop count."""
        import torch

        from posestream.engines.backends.gpu_preprocess import upload_frames, warp_crops

        parts = [warp_crops(upload_frames(frame, self.device, self.staging), m, np.zeros(len(m), np.int64), out_hw)
                 for frame, m in zip(frames, matrices)]
        return torch.cat(parts)

    def model_input(self, images: "torch.Tensor | np.ndarray", normalisation: Normalisation,
                    batch: int | None = None) -> "torch.Tensor":
        """(image * scale - mean) / std (`normalisation`, the card's) of float [N, 3, h, w] BGR 0..255
        images (or uint8 NHWC numpy crops), zero-padded to `batch` images for a fixed-batch model."""
        import torch

        from posestream.engines.backends.gpu_preprocess import normalize

        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = normalize(images, normalisation.scale, normalisation.mean, normalisation.std,
                      bgr_to_rgb=normalisation.rgb)
        if batch is not None and len(x) < batch:
            x = torch.cat([x, x.new_zeros((batch - len(x), *x.shape[1:]))])
        return x

    def run(self, feeds: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        """Run the engine on device tensors; outputs stay on the device (CPU tensors for ONNX Runtime)."""
        import torch

        if self.on_gpu:
            return self.engine.run_device(feeds)  # type: ignore[attr-defined]
        types = {spec.name: spec.dtype for spec in self.engine.inputs}
        outputs = self.engine.run({name: np.asarray(t.cpu().numpy(), dtype=types.get(name))
                                   for name, t in feeds.items()})
        return {name: torch.from_numpy(value) for name, value in outputs.items()}


def rows_above(output: "torch.Tensor", channel: int, threshold: float) -> list[np.ndarray]:
    """Per batch row of a [B, C, N] output, the columns whose `channel` is >= `threshold`, as float32
    numpy [C, n_b]; selected on the output's device and copied to the host in one transfer."""
    import torch

    keep = output[:, channel] >= threshold                          # [B, N]
    counts = keep.sum(dim=1)
    picked = output.transpose(1, 2)[keep]                           # [sum n_b, C], row-major by b
    host = torch.cat([picked.float().flatten(), counts.to(picked.device, torch.float32)]).cpu().numpy()
    batch = output.shape[0]
    sizes = host[-batch:].astype(np.int64)
    columns = host[:-batch].reshape(-1, output.shape[1])
    return [part.T for part in np.split(columns, np.cumsum(sizes)[:-1])]


def to_numpy(tensor: "torch.Tensor") -> np.ndarray:
    """A model output on the host as numpy; floating types (fp16, bf16) as float32 for decoding."""
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()
