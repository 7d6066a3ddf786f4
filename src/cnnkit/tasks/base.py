"""The task seam: what differs between kinds of prediction, in one object per task.

Training, evaluation, the runtime, serving and export hold no task-specific code: they
ask the run's :class:`Task` (a training plan's ``plan.task``, a model card's
``card.task``). Single-label classification (:mod:`cnnkit.tasks.single_label`) is the
first task; :mod:`cnnkit.tasks.registry` names every task in one place.

What a task owns, in the order data flows (every method is listed on :class:`Task`):

- **Targets.** An :class:`~cnnkit.data.imageset.ImageSet` stores them in
  ``labels``: ``(N,)`` class indices for one class per image, ``(N, K)`` per-class
  targets in 0..1 for several (MixUp/CutMix batches are ``(B, K)`` either way).
  :meth:`Task.class_counts` counts images per class, :meth:`Task.balance` turns the
  counts into loss weights or sampling weights (``--imbalance``).
- **The head.** :meth:`Task.outputs`: how many numbers the model's last layer gives.
- **The loss** on raw outputs (logits): :meth:`Task.loss`, with the denominator of a
  batch's mean (:meth:`Task.loss_denominator`) so that chunked gradients add up to
  one pass's.
- **Scores.** The runtime turns a batch of logits into per-class log-probabilities
  with :meth:`Task.scores` (torch) or :meth:`Task.scores_np` (NumPy, when
  onnxruntime runs without torch), and merges the views of test-time augmentation
  with :meth:`Task.merge_views` / :meth:`Task.merge_views_np`. Calibration (a
  temperature on the logits) belongs in ``scores``; what answers need beyond the
  probabilities (single-label: the logits' energy, for its unknown rule) is added by
  :meth:`Task.answer_inputs_np` from the raw logits of each view.
- **Figures while training.** Each epoch's row holds ``train_loss``, ``val_loss`` and
  the task's headline figure under ``train_<figure>`` and ``val_<figure>``
  (:attr:`Task.figure`; ``acc`` for single-label). :meth:`Task.hits` and
  :meth:`Task.units` give it for a training batch (from logits),
  :meth:`Task.validation_sums` for scored validation images (sums, so that the
  processes of a distributed run add theirs). The best epoch has the higher figure,
  then the lower loss.
- **Metrics.** :meth:`Task.evaluate` turns scores and targets into a result with
  ``to_dict()`` (``test_metrics.json``, ``cnnkit evaluate --json``);
  :meth:`Task.summary` is its one log line.
- **Answers.** :meth:`Task.answers` turns probabilities into one answer per image
  (an object with ``source`` and ``to_dict()``); :meth:`Task.answer_columns` and
  :meth:`Task.answer_fields` are its CSV columns and cells.
- **The model card.** :meth:`Task.card_fields` is the ``task`` object of
  ``model.json`` (``{"name": ..., **fields}``); :meth:`Task.from_card` reads it back
  (a task with settings, such as per-label thresholds, keeps them there) and
  :attr:`Task.card_keys` names those fields: a card holding others is refused, since a
  card whose task name was edited would otherwise be read as another task. A sidecar
  without ``task`` is single-label.

A task is a frozen dataclass, so two cards compare equal when their tasks do. Its
module imports neither torch nor scikit-learn at import time: prediction from an
exported file runs without torch.

A new task (detection, say) is one module with a :class:`Task` subclass and one entry in
:data:`cnnkit.tasks.registry.TASKS`; its answers, metrics and targets are its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


class Answer(Protocol):
    """One image's answer, as predict, the API and a server give it."""

    source: str

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Unreadable:
    """The answer for an image that could not be read, in its place among the others'
    (so that answers and inputs pair up): ``error`` says why; it has no label."""

    source: str
    error: str
    label: None = None
    top: tuple[()] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error}


class Result(Protocol):
    """Metrics of a model on labelled images."""

    n: int

    def to_dict(self) -> dict[str, Any]: ...

    def scalars(self) -> dict[str, float]:
        """The headline numbers by name, as an experiment tracker logs them."""
        ...


class Task(ABC):
    """What one kind of prediction decides (the module docstring lists it in order)."""

    name: ClassVar[str]  # its name in the registry and in model.json
    figure: ClassVar[str] = "acc"  # the epoch row's headline: train_<figure>, val_<figure>
    figure_name: ClassVar[str] = "accuracy"  # said in words ("validation accuracy")

    # --- the model card ---------------------------------------------------------------

    def card_fields(self) -> dict[str, Any]:
        """The ``task`` object of ``model.json``."""
        return {"name": self.name}

    # The fields besides "name" that this task writes in its card; the registry refuses a
    # card holding others (another task's card whose name was edited).
    card_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_card(cls, fields: dict[str, Any], classes: tuple[str, ...], where: str) -> Task:
        """The task a sidecar's ``task`` object describes (``where``: the file, for a
        clear error when its fields are damaged)."""
        return cls()

    # Whether the task fits settings of its own on held-out images at the end of training
    # (:meth:`fit_held_out`): single-label's temperature and unknown rule, multi-label's
    # per-label thresholds; what they are and what a run without enough validation images
    # keeps instead, for its one-line warning.
    fits_held_out: ClassVar[bool] = False
    held_out_fits: ClassVar[str] = "a temperature and an unknown rule"
    held_out_unfitted: ClassVar[tuple[str, str]] = (
        "not calibrated", "its probabilities are the model's own and predict answers "
        "'unknown' only below --threshold")

    # Whether its held-out fit reads a feature distance too (single-label's unknown rule),
    # and so whether training fits feature statistics for it.
    reads_distance: ClassVar[bool] = False

    def fit_held_out(self, views: Sequence[np.ndarray], targets: np.ndarray, *,
                     distances: Sequence[np.ndarray] | None = None,
                     features: dict[str, Any] | None = None) -> Task:
        """This task with its post-processing fitted on held-out images (the validation
        split): ``views`` are the raw logits ``(N, K)`` of each view, ``targets`` their
        targets; with :attr:`reads_distance`, ``distances`` each view's feature distances
        ``(N,)`` and ``features`` the card's entry for their statistics file. The weights
        never change; the card keeps the result."""
        return self

    @property
    def answers_read_distance(self) -> bool:
        """Whether :meth:`answer_inputs_np` wants each view's feature distances."""
        return False

    def held_out_summary(self) -> str | None:
        """What :meth:`fit_held_out` found, in one line for the training log."""
        return None

    def load_note(self) -> str | None:
        """What a user should hear once when a model with this task's settings is loaded
        for prediction (e.g. that it has no calibration); None: nothing."""
        return None

    def with_threshold(self, threshold: float) -> Task:
        """The task answering at one probability ``threshold`` (``--threshold``) in place
        of its own decisions, where its metrics depend on them; else itself."""
        return self

    def with_file_task(self, file_task: Task) -> Task:
        """The task a run's exported file answers with, given the one it carries (of
        this kind): the file's, where the file fitted decisions on its own outputs (an
        int8 file's unknown rule); a task whose file only copied this card's settings at
        export keeps the card's, which may have changed since."""
        return file_task

    # --- targets and the head -------------------------------------------------------

    @abstractmethod
    def class_counts(self, labels: torch.Tensor, n_classes: int) -> list[int]:
        """Images of each class."""

    @abstractmethod
    def balance(self, labels: torch.Tensor, counts: torch.Tensor, how: str
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(loss weights per class, sampling weight per image) for ``--imbalance``
        ``how`` (weighted-loss, balanced-sampling or none)."""

    def outputs(self, classes: Sequence[str]) -> int:
        """How many numbers the model's head gives per image."""
        return len(classes)

    # --- the loss -------------------------------------------------------------------

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *,
             weight: torch.Tensor | None = None, smoothing: float = 0.0,
             reduction: str = "mean") -> torch.Tensor:
        """The training loss of raw outputs (``reduction``: mean or sum)."""

    @abstractmethod
    def loss_denominator(self, targets: torch.Tensor, weight: torch.Tensor | None
                         ) -> torch.Tensor | int:
        """What the batch's summed loss is divided by to give its mean."""

    # --- scores ---------------------------------------------------------------------

    @abstractmethod
    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class log-probabilities ``(N, K)`` of raw outputs."""

    @abstractmethod
    def merge_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """One image's scores from the scores of its views (test-time augmentation)."""

    @abstractmethod
    def scores_np(self, logits: np.ndarray) -> np.ndarray:
        """:meth:`scores` in NumPy."""

    @abstractmethod
    def merge_views_np(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """:meth:`merge_views` in NumPy."""

    # --- figures while training -----------------------------------------------------

    @abstractmethod
    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The headline figure's numerator for a training batch (targets may be soft)."""

    def units(self, targets: torch.Tensor) -> int:
        """Its denominator: what a batch's hits are counted out of."""
        return len(targets)

    @abstractmethod
    def validation_sums(self, scores: torch.Tensor, targets: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, hits) of scored images; divided by their count and
        :meth:`units`, the epoch row's ``val_loss`` and ``val_<figure>``."""

    def chance(self, targets: torch.Tensor) -> float | None:
        """The headline figure that answering the same for every image scores on
        ``targets`` (the best such answer), below which a model has learnt nothing; None
        where the figure cannot tell (the end of a run then says nothing of chance)."""
        return None

    # --- metrics --------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, scores: torch.Tensor, targets: torch.Tensor,
                 classes: tuple[str, ...]) -> Result:
        """Metrics of scores against targets."""

    @abstractmethod
    def summary(self, result: Any) -> str:
        """The result in one line (``test: ...``)."""

    # --- answers --------------------------------------------------------------------

    def answer_inputs_np(self, views: Sequence[np.ndarray],
                         distances: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """What :meth:`answers` reads for each image, from the raw logits ``(N, K)`` of
        each view (one, or the image and its mirror with test-time augmentation) and, when
        :attr:`answers_read_distance`, each view's feature distances: the probabilities
        ``(N, K)`` by default; a task may add columns of its own after them (single-label:
        the energy and the distance its unknown rule reads)."""
        import numpy as np

        return np.exp(self.merge_views_np([self.scores_np(v) for v in views]))

    @abstractmethod
    def answers(self, probs: np.ndarray, sources: Sequence[str], classes: tuple[str, ...],
                *, top_k: int = 5, threshold: float | None = None) -> list[Any]:
        """One answer per row of probabilities ``(N, K)``."""

    @abstractmethod
    def answer_columns(self, top_k: int) -> list[str]:
        """The CSV columns of answers (``path`` first, ``error`` last)."""

    @abstractmethod
    def answer_fields(self, answer: Any | None, top_k: int) -> list[str]:
        """One answer's CSV cells between ``path`` and ``error`` (blank when None)."""
