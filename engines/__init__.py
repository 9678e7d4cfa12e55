"""Inference engines: one interface (`engines.base.Engine`) over ONNX Runtime and TensorRT, plus the
model preparation that turns checkpoints into ONNX files in the cache."""
