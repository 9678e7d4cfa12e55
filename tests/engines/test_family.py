"""Model families are found through their `Family` registration, and shared code asks them by task,
decoder and model name (nothing outside a family's folder names the family)."""
from __future__ import annotations

from pathlib import Path

import pytest

from posestream.engines import family as registry
from posestream.engines.family import Family, TorchNetwork
from posestream.stream.core.errors import ModelError

FAMILIES_DIR = Path(registry.__file__).parent / "families"


def test_every_family_folder_is_registered_under_its_name() -> None:
    folders = sorted(p.name for p in FAMILIES_DIR.iterdir() if (p / "__init__.py").is_file())
    assert [f.name for f in registry.families()] == folders
    assert all(isinstance(f, Family) for f in registry.families())


@pytest.mark.parametrize("task, family_module", [
    ("detector+pose", "yolo11"), ("pose-heatmap", "heatmap"), ("pose-simcc", "simcc"),
    ("pose-landmarks", "blazepose"), ("pose-movenet", "movenet"), ("detector+pose-movenet", "movenet"),
    ("detector-anchors", "mediapipe_detector")])
def test_each_task_has_its_family_kind_check(task: str, family_module: str) -> None:
    check = registry.kind_check(task)
    assert check.__module__ == f"posestream.engines.families.{family_module}.check"


def test_lookups_name_what_is_offered() -> None:
    with pytest.raises(ModelError, match=r"no model family offers a kind check for task 'pose-3d' \(offered: .*pose-heatmap"):
        registry.kind_check("pose-3d")
    with pytest.raises(ModelError, match=r"torch network for decoder 'heatmap' \(offered: yolo-pose\)"):
        registry.torch_network("heatmap")
    assert registry.import_kinds() == ["alphapose-fastpose"]
    assert registry.default_model_preparer().__module__ == "posestream.engines.families.yolo11.family"


def test_families_offer_exactly_the_models_their_importers_build() -> None:
    from posestream.engines.families.blazepose.mediapipe_import import MODELS as MEDIAPIPE
    from posestream.engines.families.mediapipe_detector.prepare import NAME as PERSON_DETECTOR
    from posestream.engines.families.movenet.network import MODELS as MOVENET

    assert registry.model_names() == sorted([*MEDIAPIPE, *MOVENET, PERSON_DETECTOR])


def test_the_torch_backend_gets_its_network_from_the_family(prepared_home: Path) -> None:
    from posestream.engines.backends.torch_engine import build_from_card
    from posestream.engines.model_card import ModelCard

    directory = prepared_home / "models" / "yolo11n-pose"
    built = build_from_card(ModelCard.load(directory), directory)
    assert isinstance(built, TorchNetwork)
    assert (built.input_name, built.output_name, built.output_shape) == ("images", "output0", (None, 56, None))
    assert type(built.module).__module__ == "posestream.engines.families.yolo11.network"
