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
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ModelError

from reference import COORD_CHANNELS, SCORE_CHANNELS


@pytest.mark.parametrize("flags, strong", [({"FP16": 1, "INT8": 2}, False), ({"TF32": 3}, True)])
def test_branch_is_taken_by_feature(flags: dict, strong: bool) -> None:
    assert strongly_typed_only(SimpleNamespace(BuilderFlag=SimpleNamespace(**flags))) is strong


def test_int8_on_11_names_the_way_out() -> None:
    text = int8_unsupported_message(SimpleNamespace(__version__="11.4.0"))
    assert "TensorRT 11.4.0 removed" in text and "fp16" in text and "tensorrt>=10,<11" in text


def test_fp16_twin_is_strongly_typed_and_close(config: Settings, shared: Path, tmp_path: Path) -> None:
    card, directory = load_card(config, config.model.name)
    source = card.file(directory, "dynamic")
    twin = export_fp16_onnx(source, tmp_path / "twin.onnx", int(config.model.opset))
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


def test_fp16_twin_needs_a_card_entry(config: Settings, tmp_path: Path) -> None:
    card, directory = load_card(config, config.model.name)
    stray = tmp_path / "m" / "stray.onnx"
    stray.parent.mkdir()
    (stray.parent / "model.json").write_text((directory / "model.json").read_text())
    with pytest.raises(ModelError, match="not listed in its model card.*ModelOpt AutoCast"):
        export_fp16_onnx(stray, tmp_path / "out.onnx", 17)


def test_a_users_opset_reaches_the_fp16_twin(config: Settings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT 11's FP16 twin is exported with the run's `model.opset` (a `--set model.opset=...`),
    not the shipped default read from disk. Here without a GPU: the GPU-only steps before the export
    stand in, and the export records what it was asked for and stops the build."""
    from posestream.engines.backends import tensorrt_engine
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    asked: list[int] = []

    def export(model_path: Path, out: Path, opset: int) -> Path:
        asked.append(opset)
        raise ModelError("stop after the export")

    monkeypatch.setattr(TensorRTEngine, "placement", classmethod(lambda cls, device, auto: device))
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: SimpleNamespace(__version__="11.0.0"))
    monkeypatch.setattr(tensorrt_engine, "strongly_typed_only", lambda trt: True)
    monkeypatch.setattr(tensorrt_engine, "cuda_device", lambda device: "cpu")
    monkeypatch.setattr(tensorrt_engine, "gpu_identity", lambda device: ("Test GPU", "8.6"))
    monkeypatch.setattr(tensorrt_engine, "export_fp16_onnx", export)
    card, directory = load_card(config, config.model.name)
    for opset in (config.model.opset, 19):
        settings = config.with_overrides({"model.opset": opset, "tensorrt.precision": "fp16",
                                          "tensorrt.cache_dir": str(tmp_path / "engines")})
        with pytest.raises(ModelError, match="stop after the export"):
            TensorRTEngine.from_onnx(card.file(directory, "dynamic"), settings, "cuda")
    assert asked == [config.model.opset, 19]
