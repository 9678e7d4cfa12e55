"""Every model posestream prepares by name, and which models a configuration runs.

`prepare_model(name)` dispatches to the family that builds it: the default YOLO11-pose model
(`model.name` of the defaults; `engines.models`), MediaPipe's landmark models
(`engines.mediapipe_import`), MoveNet (`engines.families.movenet`) and MediaPipe's person detector
(`engines.families.mediapipe_detector`). `models_of(settings)` are
the models a run with these settings opens, which `posestream models prepare --preset NAME`
builds and `models list --preset NAME` shows.
"""
from __future__ import annotations

from pathlib import Path

from posestream.engines.model_card import ModelCard
from posestream.stream.core.config import Config, home_dir
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.settings import Settings


def family_models() -> dict[str, str]:
    """Model name -> family, for the models the families rebuild from package files."""
    from posestream.engines.families.mediapipe_detector.prepare import NAME as PERSON_DETECTOR
    from posestream.engines.families.movenet.network import MODELS as MOVENET
    from posestream.engines.mediapipe_import import MODELS as MEDIAPIPE

    return {**{name: "mediapipe" for name in MEDIAPIPE}, **{name: "movenet" for name in MOVENET},
            PERSON_DETECTOR: "mediapipe-detector"}


def models_of(config: Config | Settings) -> list[str]:
    """The models a run with `config` opens: the detector's, then the SPPE's (top-down), then the
    hand and face models of whole-body output."""
    settings = Settings.of(config)
    names = [settings.model.name]
    if settings.pose.mode == "topdown":
        names.append(settings.pose.model)
        if settings.pose.plugin == "blazepose" and settings.pose.landmark_format == "halpe136":
            names += ["mediapipe-hand", "mediapipe-face"]
    return list(dict.fromkeys(names))


def prepare_model(name: str, config: Config, source: Path | None = None, force: bool = False,
                  demo: object = None) -> ModelCard:
    """Build `name` into the cache (or reuse it while intact)."""
    families = family_models()
    opset, threads = config["model"]["opset"], config["engine"]["intra_op_threads"]
    if families.get(name) == "movenet":
        from posestream.engines.families.movenet.prepare import prepare_movenet

        return prepare_movenet(name, home_dir(config), source, opset=opset, threads=threads, force=force)
    if families.get(name) == "mediapipe":
        from posestream.engines.mediapipe_import import prepare_landmark_model

        return prepare_landmark_model(name, home_dir(config), source, opset=opset, threads=threads, force=force)
    if families.get(name) == "mediapipe-detector":
        from posestream.engines.families.mediapipe_detector.prepare import prepare_person_detector

        return prepare_person_detector(name, home_dir(config), source, opset=opset, threads=threads, force=force)
    if name == config["model"]["name"]:
        from posestream.engines.models import prepare_default_model

        return prepare_default_model(config, source=source, force=force, demo=demo)  # type: ignore[arg-type]
    raise ConfigError(f"unknown model '{name}' (valid: {config['model']['name']}, {', '.join(families)})")
