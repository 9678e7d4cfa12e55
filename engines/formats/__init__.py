"""Readers of model file formats (TensorFlow.js graph models), each rebuilding a network in torch."""
