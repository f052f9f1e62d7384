"""Tasks: what the explained output means, so that the front doors explain and report it.

``camcore explain`` and ``camcore video`` take ``--task classify|detect|segment|regress|raw``
or read it off the outputs' shapes (the rules are each task's module docstring, tried in the
order of :data:`TASKS`: detect, segment, classify, regress, raw). A task chooses each image's
target from its options (``--target``, ``--detection``, ``--box``, ``--region``) and writes
what the model produced into the summary: classes for a classifier, boxes for a detector,
pixel areas for a segmenter, values for a regressor, the shape and sum otherwise.

Example:
    >>> choice = choose_task(cam.engine, None, TaskOptions())   # doctest: +SKIP
    >>> choice.task.name, choice.source                          # doctest: +SKIP
    ('detect', 'detected from output shape (N, 84, 8400)')
"""

from __future__ import annotations

import importlib

from camcore.tasks.registry import TASKS, Found, Outputs, Task, TaskChoice, TaskOptions, choose_task, register_task

for _module in ("detect", "basic"):  # they register their tasks in this order: the shape rules are tried in it
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["TASKS", "Found", "Outputs", "Task", "TaskChoice", "TaskOptions", "choose_task", "register_task"]
