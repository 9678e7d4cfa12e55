"""Our FastPose against AlphaPose's own forward pass (golden data in shared/golden/alphapose-fastpose).

The weights are filled by the README's recipes A and B, saved with torch.save and read back through
the allow-list loader and the importer's state-dict path, so the whole load path is exercised.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.fastpose import JOINTS_BY_FORMAT, FastPose
from engines.fastpose_import import build_fastpose, read_state_dict
from stream.config import shared_dir

GOLDEN = shared_dir() / "golden" / "alphapose-fastpose"
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@functools.lru_cache(maxsize=None)
def manifest(fmt: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{fmt}_res50_manifest.json").read_text())


def fill(fmt: str, recipe: str) -> dict[str, torch.Tensor]:
    """The golden README's weight recipe A (or B = A with BN gamma + 0.5), in manifest order."""
    info = manifest(fmt)
    torch.manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in info["state_dict"]:
        if not dtype.startswith("float"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) * 0.5 + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(shape) * 0.1
        else:
            state[key] = torch.randn(shape) * 0.05
    if recipe == "B":
        state = {k: v + 0.5 if info["key_roles"][k] == "bn_weight" else v for k, v in state.items()}
    return state


@pytest.mark.parametrize("fmt", ["coco17", "halpe26"])
def test_state_dict_equals_manifest(fmt: str) -> None:
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in FastPose(JOINTS_BY_FORMAT[fmt]).state_dict().items()]
    assert len(ours) == manifest(fmt)["num_state_dict_entries"] == 348
    assert ours == manifest(fmt)["state_dict"]


def test_fill_reproduces_fill_check() -> None:
    """Guards the recipe itself: a wrong fill would make the golden comparisons meaningless."""
    state = fill("coco17", "A")
    for key, total, first in manifest("coco17")["fill_check"]["entries"]:
        values = state[key].double().flatten()
        assert float(values.sum()) == pytest.approx(total, rel=1e-6, abs=1e-6), key
        assert values[:3].tolist() == pytest.approx(first, abs=1e-7), key


def test_halpe136_head_shape() -> None:
    model = FastPose(136).eval()
    assert model.state_dict()["conv_out.weight"].shape == (136, 128, 3, 3)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 96))
    assert out.shape == (1, 136, 32, 24)


@pytest.mark.parametrize("fmt, recipe, save", [
    ("coco17", "A", "zip"),
    ("coco17", "B", "legacy"),        # AlphaPose's model-zoo files use the pre-1.6 format
    ("halpe26", "A", "dataparallel"),  # keys saved with a `module.` prefix
    ("halpe26", "B", "zip"),
])
def test_golden_heatmaps(tmp_path: Path, fmt: str, recipe: str, save: str) -> None:
    state = fill(fmt, recipe)
    path = tmp_path / "checkpoint.pth"
    if save == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path, _use_new_zipfile_serialization=save != "legacy")

    model = build_fastpose(read_state_dict(path), fmt)
    golden = np.load(GOLDEN / f"{fmt}_res50{'_recipeB' if recipe == 'B' else ''}_output.npz")
    with torch.no_grad():
        heatmaps = model(torch.from_numpy(golden["input"])).numpy()

    assert heatmaps.shape == (2, JOINTS_BY_FORMAT[fmt], 64, 48)
    assert float(np.abs(heatmaps - golden["heatmaps"]).max()) < TOLERANCE
    if recipe == "B":  # every joint has a clear peak under recipe B, so the argmax must agree too
        flat = heatmaps.reshape(*heatmaps.shape[:2], -1).argmax(-1)
        np.testing.assert_array_equal(np.stack([flat % 48, flat // 48], -1), golden["argmax"])
