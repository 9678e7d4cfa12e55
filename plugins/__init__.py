"""Built-in detectors, pose estimators, trackers and sinks, registered through entry points exactly as
third-party plugins are (see `posestream.stream.core.registry`)."""
