"""An HTTP service in front of trained models: FastAPI on uvicorn, with a web page.

``create_app`` builds the ASGI app from loaded models; ``run_server`` runs it. Nothing
here imports the trainer (an import-linter contract): a server loads run folders.
"""

from cnnkit.serve.app import create_app
from cnnkit.serve.loading import ServedModel, build_classifier, load_models
from cnnkit.serve.server import run_server
from cnnkit.serve.settings import ServeConfig

__all__ = ["ServeConfig", "ServedModel", "build_classifier", "create_app", "load_models",
           "run_server"]
