"""cnnkit: from pixels to predictions with convolutional neural networks.

    import cnnkit
    result = cnnkit.train("fashion-mnist", model="seed-cnn", epochs=3)
    clf = cnnkit.load(result.run_dir)
    clf.predict(["shoe.png"], top_k=3)
"""

from cnnkit._version import __version__
from cnnkit.config import TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.estimator import ImageClassifier
from cnnkit.models import create_model, list_models, register_model
from cnnkit.predict import Classifier, Prediction
from cnnkit.train.session import TrainResult, resume, train


def load(path: str, device: str = "auto") -> Classifier:
    """Load a run folder (or model.json / model.safetensors) for prediction."""
    return Classifier.load(path, device)


def evaluate(run: str, data: str | None = None, *, tta: bool = False):
    """Evaluate a run on DATA, or on the run's own held-out test split when DATA is None."""
    from cnnkit.evaluation import evaluate_run

    return evaluate_run(run, data, tta=tta)


__all__ = [
    "Classifier", "CnnkitError", "ImageClassifier", "Prediction", "TrainConfig", "TrainResult",
    "__version__", "create_model", "evaluate", "list_models", "load", "register_model",
    "resume", "train",
]
