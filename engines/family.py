"""Model families: what the shared engine code asks of a family, found by name through entry points.

A family (`engines/families/<name>/`) keeps everything one kind of model needs in one folder:
network, import/preparation, pre/post-processing, kind check and plugin classes. It tells the rest
of posestream what it offers with one `Family` object, registered in `setup.py` under the
entry-point group `posestream.families` (its plugin classes register under `posestream.detectors` /
`posestream.pose` as before). Shared code never imports a family: the kind check
(`engines.model_check`), the torch backend (`engines.backends.torch_engine`) and
`posestream models prepare` look the family up here by the card's task, the card's decoder or the
model's name. Hooks are "module:function" strings, imported only when used, so listing the families
imports no torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from posestream.stream.core.errors import ModelError

GROUP = "posestream.families"


@dataclass(frozen=True)
class Family:
    """What a family offers; each mapping's values are "module:function" hooks.

    - `checks`: card task -> `check(outputs, keypoints, size, card) -> problem | None`, the kind
      check of a model's outputs (`engines.model_check` checks the input and calls it).
    - `networks`: card `output.decoder` -> `network(card, checkpoint, half) -> TorchNetwork`, the
      family's own torch network for the torch backend (and TensorRT 11's FP16 export).
    - `models`: model name -> `prepare(settings, name, source, force) -> ModelCard`, what
      `posestream models prepare NAME` builds.
    - `default_model`: `prepare(settings, source, force) -> ModelCard` for the `[model]` table's
      model (the default detector; one family offers it).
    - `importers`: kind -> `import_(settings, path, fmt, name) -> Path`, what
      `posestream models import KIND PATH` reads.
    """

    name: str
    checks: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    default_model: str = ""
    importers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TorchNetwork:
    """A family's torch network as the torch backend runs it: one image input, one output."""

    module: Any                            # torch.nn.Module, FP32 or FP16 as asked
    input_name: str
    output_name: str
    output_shape: tuple[int | None, ...]   # None: any size (batch, anchors, ...)
    output_axes: Mapping[int, str]         # the output's dynamic axes, named as our ONNX exports name them


def families() -> list[Family]:
    """Every registered family, sorted by name."""
    found = [ep.load() for ep in entry_points(group=GROUP)]
    bad = [f for f in found if not isinstance(f, Family)]
    if bad:
        raise ModelError(f"entry points of {GROUP} must be engines.family.Family objects, got {bad!r}")
    return sorted(found, key=lambda f: f.name)


def _hook(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _find(what: str, key: str, table: Callable[[Family], Mapping[str, str]]) -> Callable[..., Any]:
    offered = {k: v for family in families() for k, v in table(family).items()}
    if key not in offered:
        raise ModelError(f"no model family offers {what} '{key}' (offered: {', '.join(sorted(offered)) or 'none'})")
    return _hook(offered[key])


def kind_check(task: str) -> Callable[..., str | None]:
    """The kind check of card task `task`."""
    return _find("a kind check for task", task, lambda f: f.checks)


def torch_network(decoder: str) -> Callable[..., TorchNetwork]:
    """The torch network builder of cards whose `output.decoder` is `decoder`."""
    return _find("a torch network for decoder", decoder, lambda f: f.networks)


def preparer(name: str) -> Callable[..., Any]:
    """What prepares model `name` (`posestream models prepare NAME`)."""
    return _find("the preparation of model", name, lambda f: f.models)


def model_names() -> list[str]:
    """Every model name some family can prepare by name."""
    return sorted(name for family in families() for name in family.models)


def default_model_preparer() -> Callable[..., Any]:
    """What prepares the `[model]` table's model."""
    return _find("the default model", "default",
                 lambda f: {"default": f.default_model} if f.default_model else {})


def importer(kind: str) -> Callable[..., Any]:
    """What imports a checkpoint of `kind` (`posestream models import KIND PATH`)."""
    return _find("an importer for", kind, lambda f: f.importers)


def import_kinds() -> list[str]:
    return sorted(kind for family in families() for kind in family.importers)
