"""Exporting a trained model to run outside cnnkit: ONNX files, checked, optionally int8."""
