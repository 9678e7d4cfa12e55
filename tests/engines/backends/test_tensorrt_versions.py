"""TensorRT 10 and 11 without TensorRT: the feature test that picks the branch, the INT8 refusal on
11, and the FP16-typed ONNX twin that TensorRT 11's strong typing builds FP16 engines from (run
here by ONNX Runtime against the FP32 file: over anchors scored >= 0.25, coordinates within 2 px
and scores within 0.02, the FP16 tolerance of the TensorRT tests)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest

from posestream.engines.backends.factory import create_engine
from posestream.engines.models import load_card
from posestream.engines.preprocess import to_input
from posestream.engines.backends.tensorrt_build import export_fp16_onnx, int8_unsupported_message, strongly_typed_only
from posestream.stream.core.config import Config
from posestream.stream.core.errors import ModelError

SCORE_CHANNELS = [4] + list(range(7, 56, 3))
COORD_CHANNELS = [c for c in range(56) if c not in SCORE_CHANNELS]


@pytest.mark.parametrize("flags, strong", [({"FP16": 1, "INT8": 2}, False), ({"TF32": 3}, True)])
def test_branch_is_taken_by_feature(flags: dict, strong: bool) -> None:
    assert strongly_typed_only(SimpleNamespace(BuilderFlag=SimpleNamespace(**flags))) is strong


def test_int8_on_11_names_the_way_out() -> None:
    text = int8_unsupported_message(SimpleNamespace(__version__="11.4.0"))
    assert "TensorRT 11.4.0 removed" in text and "fp16" in text and "tensorrt>=10,<11" in text


def test_fp16_twin_is_strongly_typed_and_close(config: Config, shared: Path, tmp_path: Path) -> None:
    card, directory = load_card(config, config["model"]["name"])
    source = card.file(directory, "dynamic")
    twin = export_fp16_onnx(source, tmp_path / "twin.onnx", int(config["model"]["opset"]))
    model = onnx.load(str(twin))
    onnx.checker.check_model(model, full_check=True)  # type inference: no FP16/FP32 mix in one op
    io = [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
          for v in (*model.graph.input, *model.graph.output)]
    assert io[0] == ("images", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])
    assert io[1][:2] == ("output0", onnx.TensorProto.FLOAT)
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) > 100
    root = shared / "golden" / "yolo11n-pose"
    entries = json.loads((root / "index.json").read_text())[:2]
    with create_engine(twin, threads=2) as half, create_engine(source, threads=2) as full:
        for entry in entries:
            x = to_input([cv2.imread(str(root / entry["input_png_bgr"]))])
            got, want = half.run1(x)[0], full.run1(x)[0]
            anchors = want[4] >= 0.25
            assert anchors.any()
            assert np.abs(got - want)[COORD_CHANNELS][:, anchors].max() <= 2.0
            assert np.abs(got - want)[SCORE_CHANNELS][:, anchors].max() <= 0.02


def test_fp16_twin_needs_a_card_entry(config: Config, tmp_path: Path) -> None:
    card, directory = load_card(config, config["model"]["name"])
    stray = tmp_path / "m" / "stray.onnx"
    stray.parent.mkdir()
    (stray.parent / "model.json").write_text((directory / "model.json").read_text())
    with pytest.raises(ModelError, match="not listed in its model card.*ModelOpt AutoCast"):
        export_fp16_onnx(stray, tmp_path / "out.onnx", 17)
