"""posestream: real-time multi-person 2D pose estimation over live video.

`stream` holds the runtime (config, frame rings, stages, sources, sinks, CLI). It imports no
inference runtime: models are reached through `engines` and `plugins`.
"""
__version__ = "0.1.0"
