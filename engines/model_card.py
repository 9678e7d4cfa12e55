"""Model cards: the JSON beside each prepared ONNX file that says how to feed and decode it.

Layout of the cache: `$POSESTREAM_HOME/models/<name>/model.json` plus the ONNX files it lists.
Every ONNX file's sha256 is recorded so a corrupted cache is detected and rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from posestream.stream.core.errors import ModelError

TASKS = ("detector+pose", "pose-heatmap", "pose-simcc", "pose-landmarks", "pose-movenet",
         "detector+pose-movenet", "detector-anchors")


@dataclass(frozen=True)
class Normalisation:
    """How a model wants its pixels: x = (pixel * scale - mean) / std per channel, the channels in
    RGB (else BGR) order, laid out as `layout`. Parsed once from a card's `input` (`of_card`) for
    the numpy pre-processing and for engines that fold it into the model (`Engine.accept_images`)."""

    rgb: bool
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"

    @classmethod
    def of_card(cls, card: "ModelCard") -> "Normalisation":
        """The card's `input` normalisation (`of_input`)."""
        return cls.of_input(card.input, card.name)

    @classmethod
    def of_input(cls, spec: Mapping[str, Any], model: str) -> "Normalisation":
        """A card's `input` section parsed; a colour order other than RGB/BGR or a zero std is a
        `ModelError` naming `model`. Missing keys: RGB, scale 1, mean 0, std 1, NCHW."""
        color = spec.get("color", "RGB")
        if color not in ("RGB", "BGR"):
            raise ModelError(f"model '{model}': card input.color = {color!r} is not one of: RGB, BGR")
        std = tuple(float(v) for v in spec.get("std", (1.0, 1.0, 1.0)))
        if 0.0 in std:
            raise ModelError(f"model '{model}': input.std has a zero")
        return cls(color == "RGB", float(spec.get("scale", 1.0)),
                   tuple(float(v) for v in spec.get("mean", (0.0, 0.0, 0.0))), std, str(spec.get("layout", "NCHW")))


def letterbox_pad(spec: Mapping[str, Any], model: str) -> int:
    """The grey level a card's `input.letterbox_pad` fills around a frame that does not fill the
    canvas (the model learnt on that fill); missing: 114, the YOLO convention (families trained on
    black write 0). Not an integer 0..255: a `ModelError` naming `model`."""
    value = spec.get("letterbox_pad", 114)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ModelError(f"model '{model}': input.letterbox_pad = {value!r} is not an integer 0..255")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelCard:
    """What a model is and how to use it.

    `files` maps a variant name (e.g. "640", "320-dynamic-batch", "dynamic") to
    `{"file": "x.onnx", "sha256": ..., "input_shape": [B, 3, H, W] with null for dynamic axes}`.
    `input` holds normalisation: `{"color": "RGB", "scale": 1/255, "mean": [...], "std": [...],
    "letterbox_pad": 114}` (`Normalisation.of_input`; the pad, a grey level 0..255 around frames
    that do not fill the canvas, by `letterbox_pad`); `output` holds the decoder name and its parameters.
    """

    name: str
    task: str
    keypoint_format: str
    files: dict[str, dict[str, Any]]
    input: dict[str, Any]
    output: dict[str, Any]
    licence: str
    source: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"model card '{self.name}': unknown task '{self.task}' (valid: {', '.join(TASKS)})")

    def save(self, directory: Path) -> Path:
        path = Path(directory) / "model.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> "ModelCard":
        path = Path(directory) / "model.json"
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ModelError(f"model card missing: {path}") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelError(f"model card {path} is malformed: {exc}") from None

    @property
    def letterbox_pad(self) -> int:
        """The input's letterbox fill (`letterbox_pad`)."""
        return letterbox_pad(self.input, self.name)

    def file(self, directory: Path, variant: str) -> Path:
        """Path of one ONNX variant; raises if the variant is unknown."""
        if variant not in self.files:
            raise ModelError(f"model '{self.name}' has no variant '{variant}' "
                             f"(has: {', '.join(self.files)})")
        return Path(directory) / self.files[variant]["file"]

    def verify(self, directory: Path) -> list[str]:
        """Variants whose file is missing or whose sha256 differs from the card (empty = all good)."""
        bad = []
        for variant, entry in self.files.items():
            path = Path(directory) / entry["file"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                bad.append(variant)
        return bad
