"""The model layer: loading a causal LM, running its decoder stack piece by piece, and the two
ways every task and metric reads it — greedy decoding (:func:`generate`) and teacher-forced
scoring (:func:`score`)."""
from .generate import Generation, generate
from .loading import ALIASES, EMBEDDED, LoadedModel, load_model
from .score import Scored, score

__all__ = ["ALIASES", "EMBEDDED", "Generation", "LoadedModel", "Scored", "generate", "load_model", "score"]
