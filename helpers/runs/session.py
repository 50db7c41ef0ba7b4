"""The model a run works on: loaded once per process, edited in place and restored.

Every runner (experiments, sweeps, a backend's worker) edits the model in place and puts the
weights back from the updates it applied, so successive runs in one process — the notebooks'
cells, a worker's units — share one copy instead of loading the weights again for each.
"""
from __future__ import annotations

from ..model.loading import LoadedModel, load_model
from ..model.lower_layers import LowerLayerCache, lowest_edited_layer

_LOADED: dict[str, LoadedModel] = {}


def shared_model(model: str | LoadedModel) -> LoadedModel:
    """``load_model(model)``, once per process (one model in memory at a time); a
    :class:`LoadedModel` is returned as it is."""
    if isinstance(model, LoadedModel):
        return model
    if model not in _LOADED:
        _LOADED.clear()
        _LOADED[model] = load_model(model)
    return _LOADED[model]


def model_name(model: str | LoadedModel) -> str:
    """The name that keys result rows: the name the model was loaded by, as given (the name its
    per-model files use is :func:`helpers.model.loading.files_name`)."""
    return model.name if isinstance(model, LoadedModel) else model


class Session:
    """What a unit of work runs with: the model (loaded on first need) and the lower-layer
    cache of the layer its edits start at (reused by the units that edit at or above it)."""

    def __init__(self, model: str | LoadedModel):
        self.name = model_name(model)
        self._model = model if isinstance(model, LoadedModel) else None
        self._cache: LowerLayerCache | None = None

    def load(self) -> LoadedModel:
        if self._model is None:
            self._model = shared_model(self.name)
        return self._model

    def lower_layers(self, parameter_names) -> LowerLayerCache | None:
        """A cache of what the layers below the lowest of ``parameter_names`` compute (None when
        nothing below it can be reused)."""
        model = self.load().model
        layer = lowest_edited_layer(model, parameter_names)
        if layer is None:
            return None
        if self._cache is None or self._cache.layer != layer:
            self._cache = LowerLayerCache(model, layer)
        return self._cache
