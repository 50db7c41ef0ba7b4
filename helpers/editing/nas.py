"""NAS, norm-anchor scaling (Liu et al., "Norm Anchors Make Model Edits Last", 2026, arXiv
2602.02543), as its authors' code computes it (SasyaTitech/NAS: ``NAS/compute_z.py``,
``NAS/NAS_main.py``, ``util/vstar_stats.py``). Added through the public method registry
(:func:`helpers.editing.register_method`), as a user's method would be.

The edit asks the edited MLP for a new output at the subject's last token, its *value*
``v* = v₀ + δ`` (``v₀`` the MLP's output there now, ``δ`` what MEMIT's value optimisation adds to
the block's output). Sequential edits ask for ever larger values, and the edited matrices' norms
grow with them. NAS rescales each solved value to a fixed norm ρ before the least-squares solve:

    v* ← ρ · v* / ‖v*‖,          z = (h₀ − v₀) + v*          (h₀: the block's output now)

and does not write a request whose value is more than ``skip_factor`` × ρ (then ``z = h₀``: a
zero residual). ρ, the *anchor*, is one number per model and layer, read once off the unedited
model: the mean of ‖v*‖ over ``anchor_requests`` requests solved on their bare prompts, the
largest ``anchor_trim`` of them left out (the authors: 1000 CounterFact requests, 5 %). This
package has no CounterFact: it draws the requests from ZsRE with ``anchor_seed`` (they may include
records a chain edits; named here, not hidden). As the authors' "NAS", the solve is AlphaEdit's
(:mod:`.alphaedit`); ``nas_base: memit`` puts the anchor on MEMIT's solve instead.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass

import torch

from ..model.loading import files_name
from ..paths import cache_dir
from . import alphaedit, memit
from .registry import MethodSpec, register_method
from .rome import loss_layer_of, read_at_subject
from .modules import get_module
from .targets import optimize_targets

REVISION = 1
BASES = ("alphaedit", "memit")


@dataclass
class NASHyperParams(alphaedit.AlphaEditHyperParams):
    """AlphaEdit's keys (MEMIT's and the null space's), and the anchor's: ``anchor_requests``,
    ``anchor_trim`` (the share of the largest norms left out), ``anchor_seed``, ``anchor_batch``
    (requests solved together), ``skip_factor`` (a value above this × ρ is not written) and
    ``nas_base`` (``alphaedit``: the authors' NAS; ``memit``)."""

    anchor_requests: int = 1000
    anchor_trim: float = 0.05
    anchor_seed: int = 0
    anchor_batch: int = 16
    skip_factor: float = 2.0
    nas_base: str = "alphaedit"


def rescale(v_star: torch.Tensor, rho: float, skip_factor: float, v0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values [n, d], skipped [n])``: each row of ``v_star`` scaled to norm ``rho``, or ``v0``'s
    row where its norm exceeds ``skip_factor × rho`` (that request is not written)."""
    norms = v_star.norm(dim=-1, keepdim=True)
    skipped = (norms > skip_factor * rho).squeeze(-1)
    scaled = rho * v_star / norms
    return torch.where(skipped[:, None], v0, scaled), skipped


def trimmed_mean(norms: list[float], trim: float) -> float:
    """The mean of ``norms`` without the largest ``trim`` share (rounded down)."""
    kept = sorted(norms)[: len(norms) - int(trim * len(norms))]
    return sum(kept) / len(kept)


_ANCHORS: dict[str, float] = {}


def _anchor_key(model, hp: NASHyperParams, layer: int) -> str:
    settings = {k: v for k, v in asdict(hp).items() if k not in ("skip_factor", "nas_base", "batch_edit", "batch_size")}
    blob = json.dumps({**settings, "layer": layer, "revision": REVISION}, sort_keys=True, default=str)
    return f"{files_name(model)}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def anchor(model, tok, hp: NASHyperParams, layer: int, records=None) -> float:
    """ρ for ``layer`` (the edit's last layer): read from the cache (``$EDITHURT_CACHE/nas``), or
    computed on ``model`` as it is and saved with every norm it came from."""
    key = _anchor_key(model, hp, layer)
    if key in _ANCHORS:
        return _ANCHORS[key]
    path = cache_dir("nas") / f"{key}.json"
    if path.exists():
        _ANCHORS[key] = float(json.loads(path.read_text())["rho"])
        return _ANCHORS[key]
    if records is None:
        from ..data import load_zsre

        records = load_zsre()
    pool = sorted(records, key=lambda r: r.case_id)
    random.Random(hp.anchor_seed).shuffle(pool)
    pool = pool[: hp.anchor_requests]
    bare = NASHyperParams(**{**asdict(hp), "context_templates": ["{}"]})
    z_module = get_module(model, hp.layer_module_tmp.format(layer))
    mlp = get_module(model, hp.mlp_module_tmp.format(layer))
    norms: list[float] = []
    for start in range(0, len(pool), hp.anchor_batch):
        part = pool[start:start + hp.anchor_batch]
        z = optimize_targets(model, tok, part, bare, z_module, ["{}"], layer, loss_layer=loss_layer_of(model, hp, layer))
        v_star = _values(model, tok, part, z, z_module, mlp)[0]
        norms += v_star.norm(dim=-1).tolist()
    rho = trimmed_mean(norms, hp.anchor_trim)
    path.write_text(json.dumps({"rho": rho, "layer": layer, "requests": len(norms), "trim": hp.anchor_trim,
                                "norms": norms}, indent=1))
    _ANCHORS[key] = rho
    return rho


def _values(model, tok, requests, zs, z_module, mlp):
    """``(v* [n, d], h₀ [n, d], v₀ [n, d])`` at each request's subject-last token of its prompt."""
    prompts, subjects = [r.prompt for r in requests], [r.subject for r in requests]
    _, h0 = read_at_subject(model, tok, z_module, prompts, subjects)
    _, v0 = read_at_subject(model, tok, mlp, prompts, subjects)
    return v0 + (zs - h0), h0, v0


def prepare(model, tok, hp: NASHyperParams) -> None:
    """MEMIT's templates and key statistics, and the anchor, read now off the model as it is."""
    memit.prepare(model, tok, hp)
    anchor(model, tok, hp, hp.layers[-1])


def anchored_targets(model, tok, requests, hp: NASHyperParams, setting) -> tuple[torch.Tensor, torch.Tensor]:
    """MEMIT's targets ``z`` with their values rescaled to the anchor: ``(z [n, d], skipped [n])``."""
    if hp.nas_base not in BASES:
        from .hparams import HparamsError

        raise HparamsError(f"nas_base {hp.nas_base!r}: choose one of {BASES}")
    layer = hp.layers[-1]
    z_module = get_module(model, hp.layer_module_tmp.format(layer))
    mlp = get_module(model, hp.mlp_module_tmp.format(layer))
    rho = anchor(model, tok, hp, layer)
    zs = memit.targets(model, tok, requests, hp, setting)
    v_star, h0, v0 = _values(model, tok, requests, zs, z_module, mlp)
    values, skipped = rescale(v_star, rho, hp.skip_factor, v0)
    return h0 - v0 + values, skipped


def apply(model, tok, requests, hp: NASHyperParams, earlier_keys: alphaedit.EarlierKeys) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` of one NAS edit of ``requests`` (AlphaEdit's solve, or
    MEMIT's with ``nas_base: memit``, of the anchored targets)."""
    setting = memit.edit_setting(model, tok, hp)
    zs, _ = anchored_targets(model, tok, requests, hp, setting)
    if hp.nas_base == "memit":
        return memit.spread(model, tok, requests, hp, zs, setting)
    return alphaedit.apply(model, tok, requests, hp, earlier_keys, targets=zs)


METHOD = MethodSpec("NAS", NASHyperParams, apply, prepare=prepare, batchable=True, new_state=alphaedit.EarlierKeys,
                  revision=REVISION, base="MEMIT")


def register() -> None:
    register_method(METHOD, replace=True)


__all__ = ["NASHyperParams", "rescale", "trimmed_mean", "anchor", "anchored_targets", "apply", "prepare", "METHOD",
           "register"]
