"""The 8 downstream tasks and any registered beside them (:mod:`.tasks`), how their answers are scored (:mod:`.answers`, the
paper's; :mod:`.released`, the authors' scripts'),
and the evaluation of a model on them (:func:`evaluate_tasks`)."""
from .evaluate import PROMPT_FORMS, RECORD_COLUMNS, TaskEvaluation, collapsed_examples, evaluate_examples, evaluate_tasks, row_from_records
from .tasks import (PROTOCOLS, SCORING_REVISION, TASKS, Task, get_task, load_task, register_task, scoring_key,
                    task_names)

__all__ = ["PROMPT_FORMS", "PROTOCOLS", "RECORD_COLUMNS", "SCORING_REVISION", "TASKS", "TaskEvaluation", "collapsed_examples", "evaluate_examples",
           "evaluate_tasks", "get_task", "load_task", "row_from_records", "Task", "register_task", "scoring_key", "task_names"]
