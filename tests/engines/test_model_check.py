"""Model-kind check on real (tiny) ONNX files exported from torch: a card whose task or keypoint
format does not fit the file's tensors is one clear ModelError at load time."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import check_model_kind, declared_keypoints
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.stream.core.errors import ModelError


class Heatmaps(nn.Module):
    """[B, 3, H, W] -> [B, K, H/stride, W/stride], like a heatmap SPPE."""

    def __init__(self, joints: int, stride: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, joints, stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Rows(nn.Module):
    """[B, 3, H, W] -> [B, 56, N], like YOLO-pose's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 56, 32, stride=32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.conv(x), 2)


class SimCC(nn.Module):
    """[B, 3, H, W] -> ([B, K, 2W], [B, K, 2H]), like RTMPose."""

    def __init__(self, joints: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, joints, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        along_x, along_y = y.mean(2), y.mean(3)
        return torch.cat([along_x, along_x], 2), torch.cat([along_y, along_y], 2)


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x * scale, 4)


class OddReshape(nn.Module):
    """Any-size input -> [B, 17, 3HW/17]: only works when 3HW is a multiple of 17."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 17, x.shape[1] * x.shape[2] * x.shape[3] // 17)


def _export(module: nn.Module, path: Path, inputs: tuple[torch.Tensor, ...],
            outputs: list[str], spatial_axes: bool = False) -> Path:
    names = [f"in{i}" for i in range(len(inputs))]
    axes = {name: {0: "batch"} for name in names + outputs}
    if spatial_axes:
        axes[names[0]] = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=outputs, dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx")
    image = torch.rand(1, 3, 256, 192)
    return {
        "heatmap17": _export(Heatmaps(17), root / "h17.onnx", (image,), ["heatmaps"]),
        "heatmap26": _export(Heatmaps(26), root / "h26.onnx", (image,), ["heatmaps"]),
        "heatmap17-stride8": _export(Heatmaps(17, 8), root / "h17s8.onnx", (image,), ["heatmaps"]),
        "heatmap17-320": _export(Heatmaps(17), root / "h17-320.onnx", (torch.rand(1, 3, 320, 320),),
                                 ["heatmaps"]),
        "rows56": _export(Rows(), root / "rows.onnx", (image,), ["output0"]),
        "simcc17": _export(SimCC(17), root / "simcc.onnx", (image,), ["simcc_x", "simcc_y"]),
        "odd-reshape": _export(OddReshape(), root / "odd.onnx", (torch.rand(1, 3, 170, 100),),
                               ["heatmaps"], spatial_axes=True),
        "two-inputs": _export(TwoInputs(), root / "two.onnx", (image, torch.ones(1, 1, 1, 1)),
                              ["heatmaps"]),
    }


def _card(task: str, fmt: str = "coco17", **output: object) -> ModelCard:
    return ModelCard(name="m", task=task, keypoint_format=fmt, files={},
                     input={"size": [256, 192]}, output=output, licence="test", source={})


HEATMAP = _card("pose-heatmap", decoder="heatmap", stride=4)
HEATMAP_26 = _card("pose-heatmap", "halpe26", decoder="heatmap", stride=4, num_keypoints=26)
DETECTOR = _card("detector+pose")
SIMCC = _card("pose-simcc", split_ratio=2.0)


@pytest.mark.parametrize("model, card, error", [
    ("heatmap17", HEATMAP, None),
    ("heatmap26", HEATMAP_26, None),
    ("rows56", DETECTOR, None),
    ("simcc17", SIMCC, None),
    ("rows56", HEATMAP, r"output 'output0' is \[\?, 56, 48\], expected heatmaps \[B, 17, H, W\]"),
    ("heatmap26", HEATMAP, r"26 heatmap channels, but format 'coco17' has 17 keypoints"),
    ("heatmap17", HEATMAP_26, r"17 heatmap channels, but format 'halpe26' has 26 keypoints"),
    ("heatmap17-stride8", HEATMAP, r"expected 64x48 heatmaps \(input 256x192 at stride 4\)"),
    ("heatmap17-320", HEATMAP, r"input 'in0' is \[\?, 3, 320, 320\], the card's input size is \[256, 192\]"),
    ("heatmap17", DETECTOR, r"expected \[B, 56, N\]"),
    ("simcc17", HEATMAP, r"expected one heatmap output, the model has 2"),
    ("heatmap17", SIMCC, r"expected two SimCC outputs \(x, y\), the model has 1"),
    ("simcc17", _card("pose-simcc", split_ratio=3.0), r"SimCC lengths are \[384, 512\]"),
    ("two-inputs", HEATMAP, r"expected one image input, the model has 2"),
    ("odd-reshape", HEATMAP, r"fails on a 256x192 input"),
])
def test_check_model_kind(models: dict[str, Path], model: str, card: ModelCard,
                          error: str | None) -> None:
    with OnnxRuntimeEngine(models[model], threads=1) as engine:
        if error is None:
            check_model_kind(engine, card)
        else:
            with pytest.raises(ModelError, match=error) as info:
                check_model_kind(engine, card)
            assert str(models[model]) in str(info.value)


@pytest.mark.parametrize("card, expected", [
    (_card("pose-heatmap"), 17),
    (_card("pose-heatmap", "coco17", num_keypoints=17), 17),
    (_card("pose-heatmap", "coco17", num_keypoints=26), ModelError),
    (_card("pose-heatmap", "no-such-format", num_keypoints=136), 136),
    (_card("pose-heatmap", "no-such-format"), ModelError),
])
def test_declared_keypoints(card: ModelCard, expected: int | type[Exception]) -> None:
    if isinstance(expected, int):
        assert declared_keypoints(card) == expected
    else:
        with pytest.raises(expected):
            declared_keypoints(card)


# -- hostile and damaged ONNX files ----------------------------------------------------------------

def _add_model(folder: Path, weights: np.ndarray, *, external: str | None = None) -> Path:
    """Y = X + W with W an initializer of 4 floats, stored inline or in the file `external`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    tensor = numpy_helper.from_array(weights.astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "add",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    if external is None:
        onnx.save(model, str(path))
        return path
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    if external != "weights.bin":  # point the tensor elsewhere, as a hostile file would
        reloaded = onnx.load(str(path), load_external_data=False)
        for entry in reloaded.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = external
        onnx.save(reloaded, str(path))
    return path


def _set_external(path: Path, **fields: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    entries = model.graph.initializer[0].external_data
    for key, value in fields.items():
        found = [e for e in entries if e.key == key]
        if found:
            found[0].value = value
        else:
            entries.add(key=key, value=value)
    onnx.save(model, str(path))


WEIGHTS = np.arange(4, dtype=np.float32)


def test_a_sound_model_with_external_data_in_its_folder_loads(tmp_path: Path) -> None:
    from posestream.engines.backends.factory import create_engine
    from posestream.engines.model_check import check_onnx_file

    path = _add_model(tmp_path / "model", WEIGHTS, external="weights.bin")
    check_onnx_file(path)
    with create_engine(path) as engine:
        out = engine.run({"X": np.ones(4, np.float32)})["Y"]
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("location, match", [
    ("../secret.bin", "points outside the model's folder"),
    ("{secret}", "points outside the model's folder"),          # absolute
    ("link.bin", "leads to"),                                     # a symlink out of the folder
    ("nowhere.bin", "missing"),
])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str, match: str) -> None:
    from posestream.engines.backends.factory import create_engine

    secret = tmp_path / "secret.bin"
    secret.write_bytes(WEIGHTS.tobytes())  # a file the model must not get the runtime to read
    folder = tmp_path / "model"
    path = _add_model(folder, WEIGHTS, external="weights.bin")
    (folder / "link.bin").symlink_to(secret)
    _set_external(path, location=location.format(secret=secret))
    with pytest.raises(ModelError, match=match):
        create_engine(path)  # refused before any backend opens the file


@pytest.mark.parametrize("fields, match", [
    ({"length": "8"}, r"truncated: 8 bytes stored, 16 needed"),
    ({"length": "32"}, r"lies past the end of weights.bin"),
    ({"offset": "8"}, r"lies past the end|truncated"),
    ({"offset": "x"}, "malformed"),
])
def test_external_tensor_of_the_wrong_size_is_refused(tmp_path: Path, fields: dict, match: str) -> None:
    from posestream.engines.model_check import check_onnx_file

    path = _add_model(tmp_path / "model", WEIGHTS, external="weights.bin")
    _set_external(path, **fields)
    with pytest.raises(ModelError, match=match):
        check_onnx_file(path)


@pytest.mark.parametrize("change, match", [
    (lambda t: setattr(t, "raw_data", t.raw_data[:-4]), r"truncated: 12 bytes stored, 16 needed"),
    (lambda t: setattr(t, "raw_data", t.raw_data * 2), r"oversized: 32 bytes stored, 16 needed"),
    (lambda t: t.dims.extend([1 << 20, 1 << 20]), r"claims \d+ GiB"),
])
def test_inline_tensor_of_the_wrong_size_is_refused(tmp_path: Path, change: object, match: str) -> None:
    import onnx

    from posestream.engines.model_check import check_onnx_file

    path = _add_model(tmp_path / "model", WEIGHTS)
    model = onnx.load(str(path))
    change(model.graph.initializer[0])
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=match):
        check_onnx_file(path)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 10, b"not onnx at all\n"])
def test_a_file_that_is_not_onnx_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    from posestream.engines.model_check import check_onnx_file

    path = _add_model(tmp_path / "model", WEIGHTS)
    data = path.read_bytes()
    path.write_bytes(content or data[: len(data) // 2])  # empty case: a file cut in half
    with pytest.raises(ModelError, match=f"ONNX model {path}"):
        check_onnx_file(path)
