"""The surface every cnnkit model offers, declared once: timm's.

Training, transfer learning, Grad-CAM, summaries and export rely on these methods and
on nothing else about a model's structure, so a timm model, a scratch ``ConvNet``,
the features-mode ``TappedBackbone`` and the AlexNet adapter are used alike.
:class:`ModelInterface` states the contract (timm models satisfy it as they are);
:class:`TimmStyleModel` is the base class for cnnkit's own models, writing ``forward``
and the classifier methods once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

GroupMatcher = dict[str, Any] | Callable[[str], Any]


@runtime_checkable
class ModelInterface(Protocol):
    """What cnnkit calls on a model (timm's names and meanings).

    ``forward(x) == forward_head(forward_features(x))``; ``forward_features`` returns
    the last feature map (N, C, H, W) for convolutional nets; ``forward_head(f,
    pre_logits=True)`` returns the vector that ``get_classifier()`` reads (as wide as
    ``num_features``, or timm's ``head_hidden_size`` where a hidden layer comes between);
    ``group_matcher(coarse=True)`` orders parameters from input to output in blocks
    (a dict of regular expressions or a callable, as timm's ``group_parameters`` takes).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def get_classifier(self) -> nn.Module: ...

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None: ...

    def group_matcher(self, coarse: bool = False) -> GroupMatcher: ...


class TimmStyleModel(nn.Module):
    """Base for cnnkit's own models: subclasses define ``forward_features``,
    ``forward_head`` and ``group_matcher``, and keep their last layer in
    ``self.classifier`` (an ``nn.Linear`` from ``num_features``)."""

    num_features: int
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """A new, randomly initialised classifier for ``num_classes`` classes."""
        self.classifier = nn.Linear(self.num_features, num_classes)


def classifier_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs of the model's classifier, in ``named_parameters`` order.

    Empty for a model without ``get_classifier``.
    """
    if not hasattr(model, "get_classifier"):
        return []
    ids = {id(p) for p in model.get_classifier().parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


M = TypeVar("M", bound=nn.Module)


@contextmanager
def evaluating(model: M) -> Iterator[M]:
    """Put ``model`` in eval mode for the block, then give every module its own mode back.

    Each module's mode is restored, not just the top one's: a fine-tuning model whose
    batch norm layers are kept in eval mode inside a training model stays that way.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
