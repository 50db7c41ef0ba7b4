"""The 8 downstream tasks (:mod:`.tasks`), how their answers are scored (:mod:`.answers`),
and the evaluation of a model on them (:func:`evaluate_tasks`)."""
from .evaluate import PROMPT_FORMS, evaluate_tasks
from .tasks import PROTOCOLS, TASKS, get_task, load_task

__all__ = ["PROMPT_FORMS", "PROTOCOLS", "TASKS", "evaluate_tasks", "get_task", "load_task"]
