"""Knowledge editing: ``edit(model, tok, requests, method)`` changes the weights in place and
returns the updates it added, so that they can be studied, regularised and undone.

Sequential editing is calling :func:`edit` again on the edited model; batch editing is several
requests in one call (MEMIT, MEND; ROME and KN edit one fact at a time).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..data import EditRequest
from ..errors import EditError, EditHealthError, unknown
from ..model.loading import short_name
from .hparams import HparamsError, load_hparams
from .modules import LayerError, check_layers, from_param_layout, get_module, to_param_layout
from .performance import editing_metrics
from .prune import Prune
from .regularize import Regularizer, regularize
from .weight_change import weight_change_stats


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


def _methods():
    from . import alphaedit, kn, memit, mend, rome

    return {"ROME": (rome.ROMEHyperParams, rome.apply, False),
            "MEMIT": (memit.MEMITHyperParams, memit.apply, True),
            "KN": (kn.KNHyperParams, kn.apply, False),
            "MEND": (mend.MENDHyperParams, mend.apply, True),
            "R-ROME": (rome.RROMEHyperParams, rome.apply, False),
            "ALPHAEDIT": (alphaedit.AlphaEditHyperParams, alphaedit.apply, True)}


def _each(key: str):
    """A method's one-update-per-request function, where it batches the work (else None)."""
    from . import memit, rome

    return {"ROME": rome.apply_each, "MEMIT": memit.apply_each, "R-ROME": rome.apply_each}.get(key)


# the paper's four methods, then the later ones this package compares with RECT: r-ROME (ROME with
# consistent keys) and AlphaEdit (MEMIT projected onto the preserved keys' null space)
METHODS = ("ROME", "MEMIT", "KN", "MEND", "R-ROME", "AlphaEdit")


def canonical_method(method: str) -> str:
    """``method`` as :data:`METHODS` spells it (any case is accepted: ``"alphaedit"`` ->
    ``"AlphaEdit"``)."""
    by_key = {m.upper(): m for m in METHODS}
    key = str(method).upper()
    if key not in by_key:
        raise unknown("method", method, METHODS)
    return by_key[key]


# The revision of what the methods compute: stored results carry their method's in their keys,
# so results of an earlier revision are recomputed, never mixed in. 3: the methods as the paper's
# code computes them (KN's site and edit, MEMIT's templates, N-1 value updates, MEND's network,
# templates decoded and normalised as generate_fast does). 4, the methods that sample context
# templates or read key statistics: both are read off the unedited model also when a sequence
# resumes from stored edited weights in a new process (:func:`prepare`); revision 3 sampled them
# from the edited weights there, so its results depended on where earlier runs had stopped.
REVISION = 3
METHOD_REVISIONS = {"ROME": 4, "R-ROME": 4, "MEMIT": 4, "ALPHAEDIT": 4}


def revision(method: str) -> int:
    """The revision of what ``method`` computes (any case)."""
    return METHOD_REVISIONS.get(str(method).upper(), REVISION)


# methods whose next edit depends on more than the weights the earlier edits of its sequence
# left (upper-case keys: MEND's normalising statistics, as the reference keeps them, see
# helpers.editing.mend; AlphaEdit's keys of the earlier edits, helpers.editing.alphaedit)
CARRY_STATE = ("MEND", "ALPHAEDIT")


def begin_sequence() -> None:
    """A new sequence of edits starts: forget what the methods in :data:`CARRY_STATE` carried
    over from the edits before (call it before a sequence's first edit)."""
    from . import alphaedit, mend

    mend.begin_sequence()
    alphaedit.begin_sequence()


def read_hparams(method: str, path):
    """The hparams object of ``method`` (ROME, MEMIT, KN, MEND) from an EasyEdit-format YAML file
    at ``path``, as ``edit(..., hparams=path)`` reads it: bookkeeping keys (paths, devices,
    logging) are ignored, and module templates a file leaves out are inferred from the model
    when it edits. A file whose ``alg_name`` names another method is refused."""
    registry = _methods()
    key = str(method).upper()
    if key not in registry:
        raise unknown("method", method, list(registry))
    return load_hparams(registry[key][0], key, "", path)


def _method_key(method: str) -> str:
    """``method``'s key in :func:`_methods` (upper case), or a clear error naming the methods."""
    key = str(method).upper()
    if key not in _methods():
        raise unknown("method", method, METHODS)
    return key


def _hparams_for(model, key: str, hparams):
    """The hparams object ``edit`` uses: ``hparams`` (None, a path, overrides or an object) over
    the file shipped for ``model``, its layers checked against the model."""
    hp = load_hparams(_methods()[key][0], key, short_name(model), hparams)
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
    uninterrupted sequence; the sweep calls this before it jumps to a stored state. KN and MEND
    read nothing ahead: nothing is done for them."""
    key = _method_key(method)
    ahead = _read_ahead().get(key)
    if ahead is not None:
        ahead(model, tok, _hparams_for(model, key, hparams))


def _read_ahead():
    from . import alphaedit, memit, rome

    return {"ROME": rome.prepare, "R-ROME": rome.prepare, "MEMIT": memit.prepare, "ALPHAEDIT": alphaedit.prepare}


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
         regularizer: UpdateShaper | None = None, max_norm_growth: float | None = MAX_NORM_GROWTH) -> EditResult:
    """Edit ``model`` in place with ``method`` (:data:`METHODS`: ROME, MEMIT, KN, MEND, R-ROME,
    AlphaEdit; any case). ``hparams``: None (the
    file shipped for this model), a YAML path, a dict of overrides, or an hparams object.
    ``regularizer(delta, weight) -> delta`` shapes every update before it is added; both are
    ``[out, in]`` whatever the parameter's layout (GPT-2's ``Conv1D`` is transposed for it), e.g.
    ``helpers.Regularizer("rect", k=0.4)``, or ``helpers.Prune()`` for the update accumulated
    over a sequence (:mod:`helpers.editing.prune`).

    Every update is checked before it reaches the weights: a NaN or Inf, or a matrix whose norm
    would grow more than ``max_norm_growth`` times (None: no limit), raises
    :class:`EditHealthError` naming the request and the parameter, and nothing is changed."""
    key = _method_key(method)
    _, apply, batch_ok = _methods()[key]
    reqs = [requests] if isinstance(requests, EditRequest) else list(requests)
    if len(reqs) > 1 and not batch_ok:
        raise EditError(f"{key} edits one fact at a time; got a batch of {len(reqs)}. Call edit() once per "
                        "request (sequential editing), or use MEMIT, AlphaEdit or MEND for batch editing.")
    _check_requests(reqs)
    hp = _hparams_for(model, key, hparams)
    updates = apply(model, tok, reqs, hp)  # {param name: ΔW as [out, in]}
    try:
        return apply_update(model, updates, regularizer, method=key, hparams=hp, max_norm_growth=max_norm_growth)
    except EditHealthError as e:
        facts = "; ".join(f"{r.subject!r} -> {r.target_new!r}" for r in reqs[:3]) + (" ..." if len(reqs) > 3 else "")
        raise EditHealthError(f"{key} edit of {facts}: {e}") from None


def single_updates(model, tok, requests: Sequence[EditRequest], method: str, hparams=None) -> list[dict[str, torch.Tensor]]:
    """One update per request (``{parameter name: ΔW as [out, in]}``), each what
    ``edit(model, tok, request, method, hparams)`` would compute for that request alone on the
    model as it is; the model is left unchanged. ROME and MEMIT optimise the requests' target
    vectors together (one batched pass per step, :func:`helpers.editing.rome.optimize_targets`),
    KN and MEND edit one request at a time. Add one with :func:`apply_update` (and undo it with
    ``.restore()``) to measure each edit on its own."""
    key = _method_key(method)
    reqs = list(requests)
    _check_requests(reqs)
    hp = _hparams_for(model, key, hparams)
    each = _each(key)
    if each is not None:
        return each(model, tok, reqs, hp)
    out = []
    for r in reqs:
        begin_sequence()  # each on its own, as a fresh run of the reference
        out.append(_methods()[key][1](model, tok, [r], hp))
    return out


def apply_update(model, updates: dict[str, torch.Tensor], regularizer: UpdateShaper | None = None, *,
                 method: str = "", hparams=None, max_norm_growth: float | None = MAX_NORM_GROWTH) -> EditResult:
    """Add ``updates`` (``{parameter name: ΔW as [out, in]}``) to the model, each shaped by
    ``regularizer`` first. Every update is shaped and checked (right shape, finite, the new
    weight finite and its norm at most ``max_norm_growth`` times the old) before any weight
    changes: all or nothing, so a failed check leaves the model at its last good state."""
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
            if not torch.isfinite(delta).all():
                bad = int((~torch.isfinite(delta)).sum())
                raise EditHealthError(f"{method or 'the edit'} produced a non-finite update for {name} ({bad} NaN/Inf "
                                      "values): the weights were not changed")
            if max_norm_growth is not None:
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


__all__ = ["edit", "prepare", "single_updates", "canonical_method", "read_hparams", "begin_sequence", "CARRY_STATE", "REVISION", "METHOD_REVISIONS", "revision", "apply_update",
           "set_parameters",
           "EditResult", "EditError", "EditHealthError", "MAX_NORM_GROWTH", "HparamsError", "LayerError", "METHODS", "from_param_layout", "UpdateShaper", "editing_metrics",
           "Regularizer", "Prune", "regularize", "weight_change_stats"]
