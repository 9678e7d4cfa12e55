"""Building a rebuilt torch network into the model cache: ONNX export, the export checked against
torch, and the atomic move into `$POSESTREAM_HOME/models/<name>/`.

Used by the model families that rebuild networks from package files (MoveNet, the MediaPipe person
detector): a family supplies the torch module, its input/output names and its card; this module
does the rest the same way for all of them. A build happens in a hidden staging folder beside the
target and replaces the target only when everything passed, so a failed build writes nothing.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import check_model_kind
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.stream.core.errors import InputError, ModelError

log = logging.getLogger(__name__)


def intact_card(target: Path) -> ModelCard | None:
    """The card of an intact prepared model in `target`, else None (missing or damaged)."""
    if not (target / "model.json").is_file():
        return None
    try:
        card = ModelCard.load(target)
        bad = card.verify(target)
    except ModelError as exc:
        bad = [str(exc)]
    if bad:
        log.warning("model in %s: %s damaged or missing; rebuilding", target, ", ".join(bad))
        return None
    return card


def prepared_card(home: Path, name: str, known: Iterable[str], what: str,
                  force: bool = False) -> tuple[Path, ModelCard | None]:
    """Where the model `name` is built (`home/models/<name>/`) and its card when an intact build
    is there to reuse (None: build it; always None with `force`). A name outside `known` is one
    error naming the valid ones (`what`: the kind of model, for the message)."""
    known = list(known)
    if name not in known:
        raise InputError(f"unknown {what} '{name}' (valid: {', '.join(known)})")
    target = Path(home) / "models" / name
    return target, None if force else intact_card(target)


def build_into(target: Path, build: Callable[[Path], ModelCard]) -> ModelCard:
    """Run `build(staging)` (it writes the model's files and returns its card) and move the result
    to `target`; on any error nothing is left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        card = build(staging)
        card.save(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card


def export_onnx(module: torch.nn.Module, path: Path, input_name: str, output_names: list[str],
                example: torch.Tensor, dynamic: dict[int, str], opset: int) -> None:
    """Export `module` (one image input) with the given dynamic input axes (batch axis 0 of every
    output follows the input's)."""
    axes = {input_name: dynamic, **{name: {0: "batch"} for name in output_names}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=output_names, dynamic_axes=axes,
                          do_constant_folding=True)


def verify_export(module: torch.nn.Module, card: ModelCard, onnx_file: Path, example: torch.Tensor,
                  threads: int, tolerance: float = 1e-3) -> float:
    """Largest |ONNX - torch| over every output on `example`, after checking the file fits its card;
    a difference above `tolerance` x the output's magnitude is a `ModelError`."""
    with torch.no_grad():
        expected = [t.numpy() for t in module(example)]
    with OnnxRuntimeEngine(onnx_file, threads=threads) as engine:
        check_model_kind(engine, card)
        got = engine.run({engine.inputs[0].name: example.numpy()})
        names = [o.name for o in engine.outputs]
    worst = 0.0
    for name, want in zip(names, expected):
        diff = float(np.abs(got[name] - want).max())
        if not diff <= tolerance * max(1.0, float(np.abs(want).max())):
            raise ModelError(f"ONNX export of {onnx_file.name} output '{name}' differs from torch by {diff:.3g}")
        worst = max(worst, diff)
    return worst
