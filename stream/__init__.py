"""The streaming runtime (`posestream.stream`): sources, frame rings, stages, supervisor, pipeline,
sinks' helpers and the subscriber client. Its `core` sub-package holds the types every layer shares.
It imports no inference runtime and no concrete plugin: those are reached through the registry."""
