"""Fine-tuning tasks: each is a reader + featurize + head + postprocess + metric (see tasks/base.py).

``TASKS`` maps a task name to a default instance; ``get_task(name, **options)`` returns a fresh copy
with options set (SQuAD ``doc_stride``, text ``text_column`` ...), so a run never mutates the registry.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from lmforge.errors import ConfigError
from lmforge.tasks.base import DecoderTokens, Example, Feature, Task, check_task_name, featurize_all
from lmforge.tasks.glue import GLUE_TASKS, ClassificationTask, GlueTask
from lmforge.tasks.squad import SQUAD_TASKS, SquadTask
from lmforge.tasks.swag import SwagTask
from lmforge.tasks.tagging import TAGGING_TASKS, TaggingTask
from lmforge.tasks.custom import TextTask, text_task

TASKS: dict[str, Task] = {
    **GLUE_TASKS,
    **SQUAD_TASKS,
    "swag": SwagTask(),
    **TAGGING_TASKS,
    "text": text_task(),
}


def get_task(name: str, **options: Any) -> Task:
    """A private copy of ``TASKS[name]`` with ``options`` (dataclass fields) replaced."""
    check_task_name(name, list(TASKS))
    task = copy.deepcopy(TASKS[name])
    fields = {f.name for f in dataclasses.fields(task)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"task {name} has no option(s) {unknown}; it has {sorted(fields)}")
    return dataclasses.replace(task, **options) if options else task  # type: ignore[type-var]


__all__ = ["TASKS", "get_task", "Task", "Example", "Feature", "DecoderTokens", "featurize_all",
           "ClassificationTask", "GlueTask", "SquadTask", "SwagTask", "TaggingTask", "TextTask"]
