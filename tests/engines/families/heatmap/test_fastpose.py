"""Our FastPose against AlphaPose's own forward pass (golden data in shared/golden/alphapose-fastpose).

The weights are filled by the README's recipes A and B, saved with torch.save and read back through
the allow-list loader and the importer's state-dict path, so the whole load path is exercised.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from posestream.engines.families.heatmap.fastpose import JOINTS_BY_FORMAT, FastPose
from posestream.engines.families.heatmap.fastpose_import import build_fastpose, import_alphapose_fastpose, read_state_dict
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.model_check import check_model_kind
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.stream.core.config import shared_dir
from posestream.stream.core.errors import ConfigError, InputNotFoundError, ModelError, UnsafeCheckpointError

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


# ---------------------------------------------------------------- import into the model cache

# Every op of the export; all are in onnx-tensorrt's supported-operator list. A new op (e.g. a
# Shape/Gather chain from a careless reshape) should be a deliberate, re-checked change.
EXPECTED_OPS = {"Add", "Constant", "Conv", "DepthToSpace", "Flatten", "Gemm", "GlobalAveragePool",
                "Identity", "MaxPool", "Mul", "Relu", "Sigmoid", "Unsqueeze"}


@pytest.mark.slow  # one ResNet-50 export plus a few CPU forwards: ~10 s on an idle 2-core machine
def test_import_writes_verified_onnx_and_card(tmp_path: Path) -> None:
    checkpoint = tmp_path / "fast_res50_256x192.pth"
    torch.save(fill("coco17", "B"), checkpoint)
    home = tmp_path / "home"

    directory = import_alphapose_fastpose(checkpoint, "coco17", home, name="fp17")

    assert directory == home / "models" / "fp17"
    assert sorted(p.name for p in directory.iterdir()) == ["fp17.onnx", "model.json"]
    card = ModelCard.load(directory)
    assert (card.task, card.keypoint_format) == ("pose-heatmap", "coco17")
    assert card.verify(directory) == []
    assert card.input["size"] == [256, 192] and card.input["mean"] == [0.406, 0.457, 0.480]
    assert card.output["decoder"] == "heatmap" and card.output["stride"] == 4
    assert card.source["sha256"] == sha256_file(checkpoint)
    assert "noncommercial" in card.licence
    onnx_file = card.file(directory, "dynamic")
    assert {node.op_type for node in onnx.load(str(onnx_file)).graph.node} <= EXPECTED_OPS

    golden = np.load(GOLDEN / "coco17_res50_recipeB_output.npz")
    model = build_fastpose(read_state_dict(checkpoint), "coco17")
    with torch.no_grad():
        expected = model(torch.from_numpy(golden["input"])).numpy()
    with OnnxRuntimeEngine(onnx_file, threads=2) as engine:
        check_model_kind(engine, card)
        got = engine.run1(golden["input"])  # batch 2 through a graph traced at batch 1
    assert float(np.abs(got - expected).max()) < TOLERANCE
    assert float(np.abs(got - golden["heatmaps"]).max()) < TOLERANCE
    assert card.extra["onnx_vs_torch_max_abs_diff"] < TOLERANCE


class _RunsShell:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("echo unsafe",)


@pytest.mark.parametrize("content, error, message", [
    (None, InputNotFoundError, "checkpoint not found"),
    (_RunsShell(), UnsafeCheckpointError, "system.*not on the allow-list"),
    ([torch.zeros(3)], ModelError, "holds a list, not a state dict"),
    ({"conv_out.weight": torch.zeros(3), "epoch": 7}, ModelError, "not a plain state dict.*epoch"),
    (b"not a checkpoint", ModelError, "cannot read checkpoint"),
])
def test_read_state_dict_rejects(tmp_path: Path, content: object, error: type[Exception],
                                 message: str) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(error, match=message):
        read_state_dict(path)


def test_read_state_dict_strips_only_a_complete_module_prefix(tmp_path: Path) -> None:
    path = tmp_path / "dp.pth"
    torch.save({"module.a": torch.zeros(1), "module.b": torch.ones(1)}, path)
    assert list(read_state_dict(path)) == ["a", "b"]
    torch.save({"module.a": torch.zeros(1), "b": torch.ones(1)}, path)
    assert list(read_state_dict(path)) == ["module.a", "b"]


@pytest.fixture(scope="module")
def coco_state() -> dict[str, torch.Tensor]:
    return FastPose(17).state_dict()


def _edit(state: dict[str, torch.Tensor], case: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if case == "missing":
        del state["duc1.bn.running_var"]
    elif case == "unexpected":
        state["duc3.conv.weight"] = torch.zeros(1)
    elif case == "halpe26-head":
        state["conv_out.weight"], state["conv_out.bias"] = torch.zeros(26, 128, 3, 3), torch.zeros(26)
    elif case == "odd-head":
        state["conv_out.weight"], state["conv_out.bias"] = torch.zeros(20, 128, 3, 3), torch.zeros(20)
    elif case == "shape":
        state["preact.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    elif case == "integer":
        state["duc2.bn.weight"] = torch.zeros(512, dtype=torch.int64)
    elif case == "nan":
        state["duc2.bn.bias"] = torch.full((512,), float("nan"))
    elif case == "no-counters":
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    elif case == "half":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return state


@pytest.mark.parametrize("case, fmt, error, message", [
    ("missing", "coco17", ModelError, r"missing \(1\): duc1\.bn\.running_var"),
    ("unexpected", "coco17", ModelError, r"unexpected \(1\): duc3\.conv\.weight"),
    ("halpe26-head", "coco17", ModelError, r"head predicts 26 joints but format 'coco17' has 17; "
                                           r"use format 'halpe26'.*conv_out\.weight \[26, 128, 3, 3\]"),
    ("odd-head", "coco17", ModelError, r"head predicts 20 joints but format 'coco17' has 17\. "),
    ("none", "halpe26", ModelError, r"head predicts 17 joints but format 'halpe26' has 26; "
                                    r"use format 'coco17'"),
    ("shape", "coco17", ModelError, r"mismatched \(1\): preact\.conv1\.weight \[64, 3, 3, 3\] "
                                    r"\(expected \[64, 3, 7, 7\]\)"),
    ("integer", "coco17", ModelError, r"duc2\.bn\.weight is torch\.int64"),
    ("nan", "coco17", ModelError, r"NaN or infinite values in: duc2\.bn\.bias"),
    ("none", "coco18", ConfigError, r"unknown FastPose keypoint format 'coco18' "
                                    r"\(valid: coco17, halpe26, halpe136\)"),
    ("no-counters", "coco17", None, ""),
    ("half", "coco17", None, ""),
])
def test_build_fastpose_is_strict(coco_state: dict[str, torch.Tensor], case: str, fmt: str,
                                  error: type[Exception] | None, message: str) -> None:
    state = _edit(coco_state, case)
    if error is None:
        model = build_fastpose(state, fmt)
        loaded = model.state_dict()
        assert all(loaded[k].dtype == v.dtype for k, v in coco_state.items())
        assert torch.equal(loaded["duc1.conv.weight"], state["duc1.conv.weight"].float())
    else:
        with pytest.raises(error, match=message):
            build_fastpose(state, fmt)


@pytest.mark.parametrize("name, payload, error", [
    ("../escape", "ok", ConfigError),
    (".hidden", "ok", ConfigError),
    ("fp", "unsafe", UnsafeCheckpointError),
    ("fp", "wrong-keys", ModelError),
])
def test_failed_import_leaves_cache_untouched(tmp_path: Path, name: str, payload: str,
                                              error: type[Exception]) -> None:
    checkpoint = tmp_path / "c.pth"
    torch.save({"unsafe": _RunsShell(), "wrong-keys": {"conv_out.weight": torch.zeros(1)},
                "ok": {"x": torch.zeros(1)}}[payload], checkpoint)
    home = tmp_path / "home"
    (home / "models" / "fp").mkdir(parents=True)
    (home / "models" / "fp" / "model.json").write_text("previous")
    with pytest.raises(error):
        import_alphapose_fastpose(checkpoint, "coco17", home, name=name)
    assert [p.name for p in (home / "models").iterdir()] == ["fp"]
    assert (home / "models" / "fp" / "model.json").read_text() == "previous"
