"""Every task by name, in one place: what ``model.json``'s ``task`` and a data source name.

A new task is one :class:`~cnnkit.tasks.base.Task` subclass in a module of its own and
one entry in :data:`TASKS`.
"""

from __future__ import annotations

from typing import Any

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.base import Task
from cnnkit.tasks.multi_label import MultiLabel
from cnnkit.tasks.single_label import SingleLabel

TASKS: dict[str, type[Task]] = {SingleLabel.name: SingleLabel, MultiLabel.name: MultiLabel}
DEFAULT = SingleLabel.name  # what a model file written before tasks existed holds


def get_task(name: str) -> Task:
    """The task named ``name``, with its default settings."""
    kind = TASKS.get(name)
    if kind is None:
        raise CnnkitError(f"Unknown task {name!r}; cnnkit knows {', '.join(TASKS)}.")
    return kind()


def task_from_card(fields: Any, classes: tuple[str, ...], where: str) -> Task:
    """The task a sidecar's ``task`` value describes: absent (an older file) is
    single-label; a name alone, or ``{"name": ..., **settings}``."""
    if fields is None:
        fields = {"name": DEFAULT}
    elif isinstance(fields, str):
        fields = {"name": fields}
    name = fields.get("name") if isinstance(fields, dict) else None
    if not isinstance(name, str):
        raise CnnkitError(f"{where} is incomplete or damaged: task must be an object with "
                          "a name. Use the model.json that was saved with the weights.")
    kind = TASKS.get(name)
    if kind is None:
        raise CnnkitError(f"{where} holds a model for the task {name[:60]!r}, which this "
                          f"cnnkit does not know ({', '.join(TASKS)}); upgrade cnnkit to "
                          "load it.")
    alien = sorted(str(k) for k in fields if k != "name" and k not in kind.card_keys)
    if alien:
        raise CnnkitError(f"{where} is incomplete or damaged: its task is {name!r}, but the "
                          f"task holds {log.cut(', '.join(alien), 120)}, which a {name} model "
                          "never has (the task's name was edited, or the fields come from "
                          "another model or a newer cnnkit). Use the model.json that was "
                          "saved with the weights.")
    return kind.from_card(fields, classes, where)
