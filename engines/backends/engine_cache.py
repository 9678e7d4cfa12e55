"""TensorRT engine cache: settings, optimisation profiles, cache keys and the on-disk layout.

A serialized TensorRT engine only runs on the GPU model, TensorRT version and input shapes it was
built for, so every engine is stored under a key made of everything that decides its content:
model sha256, GPU name, compute capability, TensorRT version, precision and the optimisation
profile. A JSON file beside each engine repeats the key and the engine's own sha256; an engine
whose JSON differs from the wanted key or whose bytes no longer hash to the recorded value is
stale and is rebuilt, never loaded. This module is pure Python (no tensorrt, no CUDA) so all of it
is unit-tested on any machine.

Layout: `<cache>/<model-stem>-<precision>-<digest>.engine` + `.json` beside it, and INT8
calibration caches in `<cache>/calibration/`. `<cache>` is `tensorrt.cache_dir`, else
`$POSESTREAM_HOME/engines`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from posestream.stream.core.errors import ConfigError, ModelError
from posestream.stream.core.settings import TensorRTSettings

logger = logging.getLogger(__name__)

MIN_SIDE = 32  # smallest height/width a dynamic-size engine accepts (one stride of YOLO)
# Shape = one entry per axis; None (ONNX symbolic dim) or -1 (TensorRT) marks a dynamic axis.
Shape = Sequence[int | None]
ProfileShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class BatchProfile:
    """Smallest, most frequent and largest batch an engine is optimised for."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        TensorRTSettings.checked("min_batch", self.min)  # the bounds [tensorrt] declares
        TensorRTSettings.checked("max_batch", self.max)
        if not self.min <= self.opt <= self.max:
            raise ConfigError(f"batch profile needs min <= opt <= max, got min={self.min} "
                              f"opt={self.opt} max={self.max}")

    @classmethod
    def of(cls, settings: TensorRTSettings) -> "BatchProfile":
        """The `[tensorrt]` table's batch profile."""
        return cls(settings.min_batch, settings.opt_batch, settings.max_batch)

    def with_max(self, max_batch: int) -> "BatchProfile":
        """The same profile capped/extended to `max_batch` (opt and min are clamped into range)."""
        TensorRTSettings.checked("max_batch", max_batch)
        low = min(self.min, max_batch)
        return BatchProfile(low, min(max(self.opt, low), max_batch), max_batch)


def cache_root(settings: TensorRTSettings, home: Path) -> Path:
    """Where engines live: `tensorrt.cache_dir`, else `<home>/engines`."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    return Path(home) / "engines"


def _is_dynamic(dim: int | None) -> bool:
    return dim is None or dim < 0


def compute_profile(inputs: Mapping[str, Shape], batch: BatchProfile,
                    max_hw: tuple[int, int] | None = None) -> ProfileShapes:
    """min/opt/max shapes for every input of a network.

    A dynamic axis 0 takes the batch profile. Dynamic spatial axes (2, 3 of an NCHW input, e.g. the
    detector's rectangular letterbox) range from one stride (`MIN_SIDE`) up to `max_hw`, tuned for
    `max_hw`. Fixed axes stay fixed: a model exported for batch 1 makes a batch-1 engine whatever
    the batch profile says (callers see that in `Engine.inputs`).
    """
    shapes: ProfileShapes = {}
    for name, shape in inputs.items():
        low, opt, high = [], [], []
        for axis, dim in enumerate(shape):
            if axis == 0 and _is_dynamic(dim):
                low.append(batch.min), opt.append(batch.opt), high.append(batch.max)
                continue
            if _is_dynamic(dim):
                if len(shape) != 4 or axis not in (2, 3):
                    raise ModelError(f"input '{name}' shape {list(shape)}: axis {axis} is dynamic; "
                                     "only batch and NCHW height/width may be")
                if max_hw is None:
                    raise ConfigError(f"input '{name}' has a dynamic height/width; set "
                                      "tensorrt.max_input_size (the largest side it must accept)")
                side = max_hw[axis - 2]
                TensorRTSettings.checked("max_input_size", side)
                low.append(MIN_SIDE), opt.append(side), high.append(side)
                continue
            low.append(dim), opt.append(dim), high.append(dim)
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def profile_tag(shapes: ProfileShapes) -> str:
    """Readable, stable text for a profile, e.g. `images:1x3x640x640/4x3x640x640/8x3x640x640`."""
    parts = []
    for name in sorted(shapes):
        parts.append(name + ":" + "/".join("x".join(str(d) for d in s) for s in shapes[name]))
    return ";".join(parts)


@dataclass(frozen=True)
class EngineKey:
    """Everything that decides what a serialized engine contains."""

    model_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profile: str

    def __post_init__(self) -> None:
        TensorRTSettings.checked("precision", self.precision)
        for field_name, value in asdict(self).items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"engine cache key field '{field_name}' must be a non-empty "
                                  f"string, got {value!r}")

    def digest(self) -> str:
        """First 16 hex digits of the sha256 of the key's canonical JSON."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves half an engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """Serialized engines on disk, found by key; mismatched or corrupted entries are never returned."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def engine_path(self, key: EngineKey, model_stem: str) -> Path:
        return self.root / f"{model_stem}-{key.precision}-{key.digest()}.engine"

    @staticmethod
    def meta_path(engine_path: Path) -> Path:
        return engine_path.with_suffix(".json")

    def calibration_path(self, model_sha256: str, input_tag: str) -> Path:
        """INT8 calibration cache: depends on the network and its input shape, not on the GPU."""
        tag = hashlib.sha256(input_tag.encode("utf-8")).hexdigest()[:8]
        return self.root / "calibration" / f"{model_sha256[:16]}-{tag}.calib"

    def lookup(self, key: EngineKey, model_stem: str) -> Path | None:
        """The engine for `key` if one is stored and intact, else None (the caller rebuilds)."""
        path = self.engine_path(key, model_stem)
        meta_file = self.meta_path(path)
        if not path.is_file() or not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("engine cache: unreadable metadata %s (%s); rebuilding", meta_file, exc)
            return None
        if meta.get("key") != key.as_dict():
            logger.warning("engine cache: %s was built for a different model/GPU/TensorRT/profile; "
                           "rebuilding", path.name)
            return None
        if _sha256_bytes(path.read_bytes()) != meta.get("engine_sha256"):
            logger.warning("engine cache: %s is corrupted (sha256 differs); rebuilding", path.name)
            return None
        return path

    def store(self, key: EngineKey, model_stem: str, plan: bytes,
              extra: Mapping[str, Any] | None = None) -> Path:
        """Save an engine and its metadata; the metadata is written last, so a crash between the
        two leaves an entry that `lookup` rejects."""
        if not plan:
            raise ModelError("refusing to cache an empty TensorRT engine")
        path = self.engine_path(key, model_stem)
        _atomic_write(path, bytes(plan))
        meta = {"key": key.as_dict(), "engine_sha256": _sha256_bytes(bytes(plan)),
                "engine_bytes": len(plan), "model": model_stem,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "extra": dict(extra or {})}
        _atomic_write(self.meta_path(path), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        return path

    def entries(self) -> Iterator[dict[str, Any]]:
        """Metadata of every engine in the cache (unreadable JSON is skipped), sorted by file name."""
        if not self.root.is_dir():
            return
        for meta_file in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            engine = meta_file.with_suffix(".engine")
            meta["path"] = str(engine)
            meta["present"] = engine.is_file()
            yield meta
