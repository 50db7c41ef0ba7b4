"""The 8 downstream tasks (:mod:`.tasks`), how their answers are scored (:mod:`.answers`, the
paper's; :mod:`.released`, the authors' scripts'),
and the evaluation of a model on them (:func:`evaluate_tasks`)."""
from .evaluate import PROMPT_FORMS, evaluate_tasks
from .tasks import PROTOCOLS, SCORING_REVISION, TASKS, get_task, load_task

__all__ = ["PROMPT_FORMS", "PROTOCOLS", "SCORING_REVISION", "TASKS", "evaluate_tasks", "get_task", "load_task"]
