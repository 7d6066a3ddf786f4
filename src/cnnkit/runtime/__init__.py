"""Loading a model file and running it: backends (torch, onnxruntime), batched
inference, the predictor, zero-shot ImageNet models, batch prediction to files."""
