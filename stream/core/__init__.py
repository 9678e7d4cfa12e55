"""The core (`posestream.stream.core`): result types and wire schema, errors, configuration,
keypoint formats, plugin contracts and the entry-point registry. It imports nothing else of
posestream, so every other layer can build on it."""
