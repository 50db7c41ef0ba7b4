"""Reproducing "Model Editing Harms General Abilities of Large Language Models:
Regularization to the Rescue" (Gu et al., EMNLP 2024).

The public surface: models, data, the 8 downstream tasks and their evaluation.
"""
from .data import EditRequest, load_zsre
from .errors import (DataFormatError, DataNotFoundError, EdithurtError, ModelNotFoundError,
                     UnknownNameError)
from .editing import EditResult, edit
from .evaluate import evaluate_tasks
from .generate import Generation, Scored, generate
from .metrics import editing_metrics
from .models import load_model
from .regularize import Regularizer, regularize
from .tasks import PROTOCOLS, TASKS, get_task, load_task

__all__ = [
    "EditRequest", "load_zsre", "DataFormatError", "DataNotFoundError", "EdithurtError",
    "ModelNotFoundError", "UnknownNameError", "evaluate_tasks", "Generation", "Scored", "generate",
    "load_model", "regularize", "Regularizer", "PROTOCOLS", "TASKS", "get_task", "load_task", "edit", "EditResult", "editing_metrics",
]
