"""The model cache: where prepared models live and how they are prepared, listed and opened.

`$POSESTREAM_HOME/models/<name>/model.json` + ONNX files. Preparing is a no-op while every file
matches the sha256 in its card; a missing or corrupted file makes the model be rebuilt. With
`engine.precision = "int8"` preparing also keeps the NNCF INT8 model (OpenVINO IR) of the dynamic
variant, rebuilt when stale (`engines.quantize`); OpenVINO runs it in place of the FP32 file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import default_model_preparer, model_names
from posestream.engines.model_card import ModelCard
from posestream.stream.core.config import home_dir
from posestream.stream.core.errors import ModelError
from posestream.stream.core.settings import Settings

if TYPE_CHECKING:
    from posestream.engines.quantize import DemoFrames

log = logging.getLogger(__name__)


def models_dir(settings: Settings) -> Path:
    return home_dir(settings) / "models"


def model_dir(settings: Settings, name: str) -> Path:
    return models_dir(settings) / name


def prepare_default_model(config: Settings, source: Path | None = None, force: bool = False,
                          demo: "DemoFrames | None" = None) -> ModelCard:
    """Make sure the default model (and, for `engine.precision = "int8"`, its INT8 model) is in the
    cache and intact; build what is not. `demo` gives the demo-clip frames of the default INT8
    calibration data (the CLI passes them; the clip belongs to the runtime layer)."""
    card = _prepare_fp32(config, source, force)
    if config.engine.precision != "int8":
        return card
    from posestream.engines.quantize import build_int8, ensure_int8, nncf_available

    reason = nncf_available()
    if reason is not None:  # nncf is a dependency: only a damaged install lands here
        raise ModelError(f"engine.precision = int8 needs the INT8 model, built with NNCF: {reason}. The FP32 "
                         "model is prepared; run it with --set engine.precision=fp32, or install nncf "
                         "and prepare again")
    directory = model_dir(config, card.name)
    if force:
        return build_int8(config, card, directory, demo=demo)
    return ensure_int8(config, card, directory, demo)


def _prepare_fp32(config: Settings, source: Path | None, force: bool) -> ModelCard:
    name = config.model.name
    directory = model_dir(config, name)
    if not force and (directory / "model.json").is_file():
        try:
            card = ModelCard.load(directory)
            bad = card.verify(directory)
        except ModelError as exc:
            bad = [str(exc)]
        if not bad:
            log.info("model %s is prepared and intact (%s)", name, directory)
            return card
        log.warning("model %s: %s damaged or missing; rebuilding", name, ", ".join(bad))
    directory.parent.mkdir(parents=True, exist_ok=True)
    card = default_model_preparer()(config, directory, source)  # the family's: torch/onnx only when building
    log.info("model %s prepared in %s", name, directory)
    return card


def list_models(config: Settings) -> list[tuple[str, str, str, str]]:
    """(name, task, status, licence) for every model in the cache; status is 'ok' or what is wrong."""
    rows = []
    root = models_dir(config)
    for directory in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            card = ModelCard.load(directory)
            bad = card.verify(directory)
            rows.append((card.name, card.task, "ok" if not bad else "damaged: " + ", ".join(bad), card.licence))
        except ModelError as exc:
            rows.append((directory.name, "?", str(exc), "?"))
    return rows


def load_card(settings: Settings, name: str) -> tuple[ModelCard, Path]:
    """The card and directory of a prepared model, with a hint when it is missing. Opening it for
    inference (sha256 check, engine) is `engines.runner.ModelRunner`'s job."""
    directory = home_dir(settings) / "models" / name
    if not (directory / "model.json").is_file():
        hint = (f"run `posestream models prepare {name}`" if name == settings.model.name or name in model_names()
                else "import it with `posestream models import`")
        raise ModelError(f"model '{name}' is not prepared in {directory.parent} ({hint})")
    return ModelCard.load(directory), directory


def runtime_model_file(settings: Settings, card: ModelCard, directory: Path, variant: str) -> Path:
    """The file that actually runs for `variant`: the INT8 model in place of the FP32 dynamic one
    when `engine.precision = "int8"` and the configured backend resolves to OpenVINO (the only one
    that runs the IR; its files are checked against the card's sha256 here)."""
    from posestream.engines.backends.factory import resolve_backend
    from posestream.engines.quantize import FP32_VARIANT, INT8_KEY, int8_problems

    backend, _ = resolve_backend(settings.engine.backend, settings.engine.device)
    if settings.engine.precision != "int8" or backend != "openvino" or variant != FP32_VARIANT:
        return card.file(directory, variant)
    problems = int8_problems(card, directory, settings)
    if problems:
        log.warning("engine.precision = int8 but the INT8 model of %s is not usable (%s): running FP32; "
                    "run `posestream models prepare`", card.name, ", ".join(problems))
        return card.file(directory, variant)
    path = Path(directory) / card.extra[INT8_KEY]["file"]
    log.info("%s: running its INT8 model %s (engine.precision = int8)", card.name, path.name)
    return path
