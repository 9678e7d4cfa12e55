"""Which models a configuration runs, and preparing any model by name.

`prepare_model(name)` builds the `[model]` table's default model (`engines.models`) or a model a
family offers by name (`engines.family`: MediaPipe's landmark models, MoveNet, MediaPipe's person
detector). `models_of(settings)` are the models a run with these settings opens, which
`posestream models prepare --preset NAME` builds and `models list --preset NAME` shows.
"""
from __future__ import annotations

from pathlib import Path

from posestream.engines.family import model_names, preparer
from posestream.engines.model_card import ModelCard
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.settings import Settings


def models_of(settings: Settings) -> list[str]:
    """The models a run with `settings` opens: the detector's, then the SPPE's (top-down), then the
    hand and face models of whole-body output."""
    names = [settings.model.name]
    if settings.pose.mode == "topdown":
        names.append(settings.pose.model)
        if settings.pose.plugin == "blazepose" and settings.pose.landmark_format == "halpe136":
            names += ["mediapipe-hand", "mediapipe-face"]
    return list(dict.fromkeys(names))


def prepare_model(name: str, settings: Settings, source: Path | None = None, force: bool = False,
                  demo: object = None) -> ModelCard:
    """Build `name` into the cache (or reuse it while intact)."""
    if name == settings.model.name:
        from posestream.engines.models import prepare_default_model

        return prepare_default_model(settings, source=source, force=force, demo=demo)  # type: ignore[arg-type]
    if name in model_names():
        return preparer(name)(settings, name, source, force)
    raise ConfigError(f"unknown model '{name}' (valid: {', '.join([settings.model.name, *model_names()])})")
