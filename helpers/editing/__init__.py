"""Knowledge editing: ``edit(model, tok, requests, method)`` changes the weights in place and
returns the updates it added, so that they can be studied, regularised and undone.

Sequential editing is calling :func:`edit` again on the edited model; batch editing is several
requests in one call (MEMIT, MEND; ROME and KN edit one fact at a time).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..data import EditRequest
from ..errors import EditError, EditHealthError, RegistryError, UnknownNameError
from ..model.loading import files_name
from .hparams import HparamsError, load_hparams
from .modules import LayerError, check_layers, from_param_layout, get_module, to_param_layout
from .performance import editing_metrics
from .prune import Prune
from . import builtin
from .registry import EditSequence, MethodSpec, method_names, method_spec, register_method
from .regularize import Regularizer, regularize
from .weight_stats import weight_change_stats


# One edit multiplying a matrix's norm by more than this is an explosion, not an edit: one ROME
# edit of SmolLM2 grows it by 0.2-0.7 %, one MEMIT edit by under 0.1 % (README, Reliability).
MAX_NORM_GROWTH = 10.0


@dataclass
class EditResult:
    """What an edit did. ``deltas``: the update added to each parameter, in the parameter's own
    layout (Conv1D: ``[in, out]``; Linear: ``[out, in]``), after any regulariser.
    ``updates``: the method's own updates ``[out, in]``, before any regulariser (so another
    regulariser can be tried on them without editing again: :func:`apply_update`).
    ``originals``: each changed parameter's value before the edit (its own layout), what
    ``restore()`` puts back bit-exactly (only the changed parameters are saved)."""

    method: str
    deltas: dict[str, torch.Tensor]
    hparams: object
    updates: dict[str, torch.Tensor] = field(default_factory=dict)
    model: object = field(repr=False, default=None)
    originals: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def changed(self) -> list[str]:
        """The names of the parameters this edit changed."""
        return list(self.originals)

    def restore(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, w in self.originals.items():
                params[name].copy_(w)


def set_parameters(model, values: dict[str, torch.Tensor]) -> EditResult:
    """Put stored parameter ``values`` (each in its parameter's own layout, e.g. the edited
    weights of a stored sweep checkpoint) into ``model`` exactly. The returned EditResult
    (method ``"set"``) restores the values they replaced."""
    params = dict(model.named_parameters())
    unknown_names = [n for n in values if n not in params]
    if unknown_names:
        raise EditError(f"the model has no parameter(s) {unknown_names}")
    result = EditResult("set", {}, None, {}, model)
    with torch.no_grad():
        for name, v in values.items():
            result.originals[name] = params[name].detach().clone()
            params[name].copy_(v)
    return result


# ``regularizer(delta, weight) -> delta``, both ``[out, in]``: e.g. ``helpers.Regularizer("rect", 0.4)``
UpdateShaper = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# the paper's four methods, then the later ones this package compares with RECT: r-ROME (ROME with
# consistent keys) and AlphaEdit (MEMIT projected onto the preserved keys' null space). A method
# registered later (register_method) is named like these; method_names() lists them all.
METHODS = ("ROME", "MEMIT", "KN", "MEND", "R-ROME", "AlphaEdit")


def canonical_method(method: str) -> str:
    """``method`` as its spec spells it (any case is accepted: ``"alphaedit"`` -> ``"AlphaEdit"``)."""
    return method_spec(method).name


def base_method(method: str) -> str:
    """The plain method a rescue built on ``method`` is compared with (its spec's ``base``:
    r-ROME -> ROME, AlphaEdit -> MEMIT); the method itself otherwise, also for a name no method
    is registered under (a column of an older table)."""
    try:
        spec = method_spec(method)
    except UnknownNameError:
        return method
    return spec.base or spec.name


def revision(method: str) -> int:
    """The revision of what ``method`` computes (any case)."""
    return method_spec(method).revision


# the sequence of hand calls to edit() on each model (a chain passes its own): the state the methods
# carry from one edit to the next until begin_sequence() starts another
_HAND_SEQUENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def begin_sequence(model=None) -> None:
    """A new sequence of hand calls to :func:`edit` starts (on ``model``; None: on every model):
    forget what the methods that carry state (MEND's normalising statistics, AlphaEdit's earlier
    keys) kept from the edits before. Calls that pass ``sequence=`` are not affected."""
    if model is None:
        _HAND_SEQUENCES.clear()
    else:
        _HAND_SEQUENCES.pop(model, None)


def hand_sequence(model) -> EditSequence:
    """The sequence that calls to :func:`edit` on ``model`` without ``sequence=`` go on."""
    if model not in _HAND_SEQUENCES:
        _HAND_SEQUENCES[model] = EditSequence()
    return _HAND_SEQUENCES[model]


def read_hparams(method: str, path):
    """The hparams object of ``method`` from an EasyEdit-format YAML file at ``path``, as
    ``edit(..., hparams=path)`` reads it: bookkeeping keys (paths, devices, logging) are ignored,
    and module templates a file leaves out are inferred from the model when it edits. A file
    whose ``alg_name`` names another method is refused."""
    spec = method_spec(method)
    return load_hparams(spec.hparams, spec.key, "", path, folder=spec.hparams_dir)


def hparams_for(model, method: str, hparams):
    """The hparams object ``edit`` uses: ``hparams`` (None, a path, overrides or an object) over
    the file shipped for ``model``, its layers checked against the model."""
    spec = method_spec(method)
    hp = load_hparams(spec.hparams, spec.key, files_name(model), hparams, folder=spec.hparams_dir)
    if getattr(hp, "layers", None):
        check_layers(model, hp.layers)
    return hp


def prepare(model, tok, method: str, hparams=None) -> None:
    """Read now, from ``model`` as it is, what ``method`` reads off the model once per process and
    keeps for all later edits: ROME's, r-ROME's, MEMIT's and AlphaEdit's context templates
    (texts sampled from the model) and key statistics (also cached on disk). Call it while the
    model is unedited.

    The reference code computes both at the first edit of a run, so on the unedited model. A
    sequence that resumes from stored edited weights in a fresh process (a rerun after a crash, a
    Ray worker) would otherwise sample them from the edited model and edit differently from the
    uninterrupted sequence; a chain (:mod:`helpers.runs.chain`) calls this before it jumps to a
    stored state. A method whose spec has no ``prepare`` (KN, MEND) reads nothing ahead."""
    spec = method_spec(method)
    if spec.prepare is not None:
        spec.prepare(model, tok, hparams_for(model, method, hparams))


def _check_requests(reqs) -> None:
    if not reqs:
        raise EditError("no edit requests given")
    for r in reqs:
        if not isinstance(r, EditRequest):
            raise EditError(f"requests must be EditRequest objects, got {type(r).__name__}")
        if not r.target_new or not r.target_new.strip():
            raise EditError(f"empty target_new for the prompt {r.prompt!r}")
        if not r.subject or r.subject not in r.prompt:
            raise EditError(f"the subject {r.subject!r} does not occur in the prompt {r.prompt!r}")


def edit(model, tok, requests: EditRequest | Sequence[EditRequest], method: str, hparams=None,
         regularizer: UpdateShaper | None = None, max_norm_growth: float | None = MAX_NORM_GROWTH,
         sequence: EditSequence | None = None, guard: bool = True) -> EditResult:
    """Edit ``model`` in place with ``method`` (:data:`METHODS`: ROME, MEMIT, KN, MEND, R-ROME,
    AlphaEdit, or one added with :func:`register_method`; any case). ``hparams``: None (the
    file shipped for this model), a YAML path, a dict of overrides, or an hparams object.
    ``regularizer(delta, weight) -> delta`` shapes every update before it is added; both are
    ``[out, in]`` whatever the parameter's layout (GPT-2's ``Conv1D`` is transposed for it), e.g.
    ``helpers.Regularizer("rect", k=0.4)``, or ``helpers.Prune()`` for the update accumulated
    over a sequence (:mod:`helpers.editing.prune`). ``sequence``: the
    :class:`EditSequence` this edit continues (what MEND and AlphaEdit carry from edit to edit);
    None: the sequence of hand calls on ``model`` (:func:`begin_sequence` starts a new one).

    ``guard`` (the package's own safety option, not the reference code's): every update is
    checked before it reaches the weights, and a NaN or Inf, or a matrix whose norm would grow more
    than ``max_norm_growth`` times (None: no limit), raises :class:`EditHealthError` naming the
    request and the parameter, and nothing is changed. ``guard=False`` applies every update as the
    reference code does, whatever it does to the model: what the chains of :mod:`helpers.runs` do,
    so that a collapse is measured, not refused (docs/methods.md, "Collapse")."""
    spec = method_spec(method)
    key = spec.key
    reqs = [requests] if isinstance(requests, EditRequest) else list(requests)
    if len(reqs) > 1 and not spec.batchable:
        batchable = [s for s in method_names() if method_spec(s).batchable]
        raise EditError(f"{spec.name} edits one fact at a time; got a batch of {len(reqs)}. Call edit() once per "
                        f"request (sequential editing), or use a method that edits batches ({', '.join(batchable)}).")
    _check_requests(reqs)
    hp = hparams_for(model, method, hparams)
    sequence = sequence if sequence is not None else hand_sequence(model)
    parts = []
    try:
        for chunk in batch_chunks(hp, len(reqs)):
            updates = compute_updates(model, tok, reqs[chunk], spec, hp, sequence)
            try:
                parts.append(apply_update(model, updates, regularizer, method=key, hparams=hp,
                                          max_norm_growth=max_norm_growth, guard=guard))
            except EditHealthError as e:
                part = reqs[chunk]
                facts = "; ".join(f"{r.subject!r} -> {r.target_new!r}" for r in part[:3]) + (" ..." if len(part) > 3 else "")
                raise EditHealthError(f"{key} edit of {facts}: {e}") from None
    except BaseException:  # all or nothing: the chunks applied before a failure are taken back
        for part in reversed(parts):
            part.restore()
        raise
    return parts[0] if len(parts) == 1 else _as_one(parts)


# how a batch of requests is edited: "chunks" as the released editor, "joint" in one edit (docs/protocol.md),
# and how tables and claims name each
BATCH_EDITS = ("chunks", "joint")
BATCH_EDIT_NAMES = {"chunks": "as released", "joint": "joint"}


def batch_chunks(hp, n: int) -> list[slice]:
    """The chunks one batch of ``n`` requests is edited in, one after another, each computed on the
    model the chunk before left: with ``batch_edit: chunks`` (the released editor's
    ``BaseEditor.batch_edit``), chunks of the hparams' ``batch_size`` (0: all at once); with
    ``batch_edit: joint``, or for a method without the setting, all ``n`` in one edit."""
    how = getattr(hp, "batch_edit", "joint")
    if how not in BATCH_EDITS:
        raise HparamsError(f"batch_edit {how!r}: choose 'chunks' (the released editor: chunks of batch_size in "
                           "sequence) or 'joint' (one edit over the whole batch)")
    size = int(getattr(hp, "batch_size", 0) or 0) if how == "chunks" else 0
    if size <= 0 or size >= n:
        return [slice(0, n)]
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _as_one(parts: list[EditResult]) -> EditResult:
    """One result for an edit made of several chunks: the summed updates and deltas, and each
    parameter's value before the first chunk (what ``restore()`` puts back)."""
    first = parts[0]
    out = EditResult(first.method, {}, first.hparams, {}, first.model)
    for part in parts:
        for name, d in part.deltas.items():
            out.deltas[name] = out.deltas[name] + d if name in out.deltas else d
        for name, u in part.updates.items():
            out.updates[name] = out.updates[name] + u if name in out.updates else u
        for name, w in part.originals.items():
            out.originals.setdefault(name, w)
    return out


def compute_updates(model, tok, requests: list[EditRequest], spec: MethodSpec, hp, sequence: EditSequence) -> dict:
    """``{parameter name: ΔW as [out, in]}`` of ``spec``'s edit of ``requests`` (the model is left
    unchanged), its state taken from and kept in ``sequence``."""
    if spec.carries_state:
        return spec.apply(model, tok, requests, hp, sequence.state_of(spec))
    return spec.apply(model, tok, requests, hp)


def single_updates(model, tok, requests: Sequence[EditRequest], method: str, hparams=None) -> list[dict[str, torch.Tensor]]:
    """One update per request (``{parameter name: ΔW as [out, in]}``), each what
    ``edit(model, tok, request, method, hparams)`` would compute for that request alone on the
    model as it is; the model is left unchanged. ROME and MEMIT optimise the requests' target
    vectors together (one batched pass per step, :func:`helpers.editing.targets.optimize_targets`),
    KN and MEND edit one request at a time. Add one with :func:`apply_update` (and undo it with
    ``.restore()``) to measure each edit on its own."""
    spec = method_spec(method)
    reqs = list(requests)
    _check_requests(reqs)
    hp = hparams_for(model, method, hparams)
    if spec.apply_each is not None:
        return spec.apply_each(model, tok, reqs, hp)
    # each on its own, as a fresh run of the reference: a new sequence each
    return [compute_updates(model, tok, [r], spec, hp, EditSequence()) for r in reqs]


def apply_update(model, updates: dict[str, torch.Tensor], regularizer: UpdateShaper | None = None, *,
                 method: str = "", hparams=None, max_norm_growth: float | None = MAX_NORM_GROWTH,
                 guard: bool = True) -> EditResult:
    """Add ``updates`` (``{parameter name: ΔW as [out, in]}``) to the model, each shaped by
    ``regularizer`` first. Every update is shaped and checked (right shape; with ``guard``,
    finite and the new weight's norm at most ``max_norm_growth`` times the old) before any
    weight changes: all or nothing, so a failed check leaves the model at its last good state.
    ``guard=False``: no check of the values, as the reference code (:func:`edit`)."""
    params = dict(model.named_parameters())
    unknown_names = [n for n in updates if n not in params]
    if unknown_names:
        raise EditError(f"the model has no parameter(s) {unknown_names}")
    result = EditResult(method, {}, hparams, {n: u.detach() for n, u in updates.items()}, model)
    with torch.no_grad():
        for name, upd in updates.items():
            module = get_module(model, name.rsplit(".", 1)[0])
            w = params[name]
            upd = upd.to(device=w.device, dtype=w.dtype)
            if upd.shape != from_param_layout(w, module).shape:
                raise EditError(f"the update for {name} has shape {tuple(upd.shape)}; the weight as [out, in] "
                                f"is {tuple(from_param_layout(w, module).shape)}")
            if regularizer is not None:
                shape = upd.shape
                current = from_param_layout(w.detach(), module)
                # a regulariser of the accumulated update (PRUNE) keeps each parameter's original by name
                upd = regularizer(upd, current, name=name) if getattr(regularizer, "takes_name", False) else \
                    regularizer(upd, current)
                if upd.shape != shape:
                    raise EditError(f"the regulariser returned shape {tuple(upd.shape)} for {name}, whose "
                                    f"update is {tuple(shape)} ([out, in])")
            delta = to_param_layout(upd, module).to(w.dtype)
            if guard and not torch.isfinite(delta).all():
                bad = int((~torch.isfinite(delta)).sum())
                raise EditHealthError(f"{method or 'the edit'} produced a non-finite update for {name} ({bad} NaN/Inf "
                                      "values): the weights were not changed")
            if guard and max_norm_growth is not None:
                old_norm = float(torch.linalg.vector_norm(w.double()))
                new_norm = float(torch.linalg.vector_norm(w.double() + delta.double()))
                if not new_norm <= max_norm_growth * old_norm:  # also catches an overflow to inf
                    raise EditHealthError(
                        f"the update would change the norm of {name} from {old_norm:.4g} to {new_norm:.4g} (more than "
                        f"max_norm_growth={max_norm_growth:g} times): the weights were not changed, the model stays "
                        "at its last good state. Check the hparams (v_lr, clamp_norm_factor, the edit's layers), or "
                        "pass max_norm_growth=None to allow it")
            result.deltas[name] = delta
        for name, delta in result.deltas.items():
            w = params[name]
            result.originals.setdefault(name, w.detach().clone())
            w.add_(delta)
    return result


# the package's own methods, registered as a user's would be (their modules import no part of this one)
builtin.register()

__all__ = ["edit", "prepare", "single_updates", "compute_updates", "canonical_method", "read_hparams", "hparams_for",
           "begin_sequence", "hand_sequence", "batch_chunks", "BATCH_EDITS", "BATCH_EDIT_NAMES", "revision", "base_method", "apply_update", "set_parameters",
           "MethodSpec", "EditSequence", "RegistryError", "register_method", "method_spec", "method_names",
           "EditResult", "EditError", "EditHealthError", "MAX_NORM_GROWTH", "HparamsError", "LayerError", "METHODS", "from_param_layout", "UpdateShaper", "editing_metrics",
           "Regularizer", "Prune", "regularize", "weight_change_stats"]
