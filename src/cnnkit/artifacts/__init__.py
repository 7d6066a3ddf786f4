"""What a run leaves on disk and how it is read back: the run folder and its lock,
model files with their cards and input recipe, ONNX exports, records that bind
derived files to their source."""
