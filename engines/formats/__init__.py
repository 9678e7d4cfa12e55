"""Readers of model file formats (TFLite flatbuffers, TensorFlow.js graph models), each rebuilding a
network in torch."""
