"""Reproducing "Model Editing Harms General Abilities of Large Language Models:
Regularization to the Rescue" (Gu et al., EMNLP 2024).

The public surface: models, data, the 8 downstream tasks and their evaluation, editing and
its regularisers, and the registries that add a method or a task (docs/extending.md). The layers, each using only those below it:

- ``helpers.report``      figures, tables, sliders, the claims report, ``make reproduce``
- ``helpers.runs``        the results store, experiments and sweeps, their backends
- ``helpers.editing``     the editing methods, editing metrics, regularisers, weight change
- ``helpers.evaluation``  the downstream tasks and their scoring
- ``helpers.model``       loading, the decoder stack, generation and scoring
- ``helpers.data``, ``helpers.paths``, ``helpers.files``, ``helpers.errors``
"""
from .data import EditRequest, load_zsre
from .editing import (METHODS, EditResult, EditSequence, MethodSpec, Prune, Regularizer, apply_update, edit, editing_metrics,
                      method_names, register_method, regularize, weight_change_stats)
from .extensions import load_extensions
from .errors import (DataFormatError, DataNotFoundError, EdithurtError, ModelNotFoundError,
                     UnknownNameError)
from .evaluation import (PROTOCOLS, TASKS, Task, evaluate_examples, evaluate_tasks, get_task, load_task, register_task,
                         task_names)
from .model import Generation, LoadedModel, Scored, generate, load_model, score

__all__ = [
    "EditRequest", "load_zsre", "DataFormatError", "DataNotFoundError", "EdithurtError",
    "ModelNotFoundError", "UnknownNameError", "evaluate_tasks", "evaluate_examples", "Generation", "Scored", "generate", "score",
    "load_model", "LoadedModel", "regularize", "Regularizer", "Prune", "PROTOCOLS", "TASKS", "get_task", "load_task", "edit",
    "EditResult", "apply_update", "editing_metrics", "weight_change_stats", "METHODS", "MethodSpec", "EditSequence",
    "register_method", "method_names", "Task", "register_task", "task_names", "load_extensions",
]
