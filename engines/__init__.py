"""Inference engines (`posestream.engines`): one interface (`Engine`) over ONNX Runtime and TensorRT, plus the
model preparation that turns checkpoints into ONNX files in the cache."""
