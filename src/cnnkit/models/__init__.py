"""Models: one registry, scratch CNNs, custom layer specs and pretrained backbones."""

from cnnkit.models.build import create_model
from cnnkit.models.registry import ModelInfo, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
