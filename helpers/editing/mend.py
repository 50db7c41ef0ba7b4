"""MEND (Mitchell et al., 2022) as the paper's code runs it (EasyEdit's ``trainer/algs/MEND.py``,
``local_nn.py``, ``EditTrainer`` and ``models/mend/mend_main.py``).

The gradient of a weight on one batch is a sum of rank-1 terms ``δ_t x_tᵀ`` (``x_t`` the layer's
input at row ``t``, ``δ_t`` the loss gradient at its output). Rows whose ``x`` or ``δ`` is all
zero are dropped (the last token's, whose output no loss reads, and padding). Each
``[x_t; δ_t]`` is normalised with running statistics (Welford; unbiased std, ``+1e-7``), then
passed through ``n_hidden + 1`` low-rank residual layers ``z ← clamp(s_m ⊙ (U V z + b) + c_m,
min=0) + z`` (``U`` zero and ``V`` standard normal at initialisation: the identity), with a
scale ``s_m`` and shift ``c_m`` per layer for each weight ``m`` of a shared network (one network
per weight shape). The update is ``ΔW = + η_m Σ_t δ̃_t x̃_tᵀ`` with a learnt step ``η_m`` per
weight (the sign is learnt through training, not built in).

Training (``EditTrainer``): one ZsRE record per batch, the edit loss the NLL of the target after
the edited prompt (``cedit``), plus ``cloc`` × the KL of the locality answer's positions from
the unedited model's; gradients averaged over ``accumulate_bs`` batches, their total norm
clipped to ``grad_clip``, one Adam step (``lr``) for the network and the steps ``η`` together
(the reference's separate ``lr_lr`` optimiser never sees a gradient: its step follows the
other's ``zero_grad``). Every encoding is cut to ``max_length`` (40) tokens. The schedule is
``BaseTrainer.run``'s (:func:`train_mend`): epochs, at most ``max_iters − 1`` batches, a
validation every ``val_interval`` batches, early stopping, and the network with the best
validation loss kept, as the reference keeps its checkpoint.

Edit time (``mend_main``): the edit input is the prompt followed by the target with a leading
space, the labels the target's tokens as the tokenizer gives them (left-padded with the
padding token, unmasked, in a batch). Two of the reference's behaviours are kept by default and
can be switched off:

* ``edit_statistics: reference``: the network runs in training mode, so the normalising
  statistics restart with the first edit after the network is loaded (the trained ones are
  dropped) and keep accumulating over the edits that follow — in this package, over the edits
  of one sequence (:class:`SequenceStatistics`, kept by the sequence's
  :class:`~helpers.editing.registry.EditSequence`). ``trained``: the trained statistics, unchanged.
* ``edit_lr_order: parameters``: the learnt steps are taken in the order of the model's
  parameters, not of ``inner_params``; GPT-2's files list ``c_proj`` before ``c_fc``, so their
  steps swap within each layer. ``inner_params``: each weight its own step.

The paper's training file (zsre_mend_train.json) is not distributed: MEND is trained on a fixed
split of the 1037 ZsRE records (:func:`split_zsre`), and editing a record of the training split
is refused. A network trained by the reference code (``archive``) can be loaded instead.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CacheError, EditError
from ..files import load_safetensors, save_safetensors
from ..model.batching import pad, pad_id
from ..model.loading import files_name
from ..paths import cache_dir
from .hparams import HparamsError
from .modules import get_module, is_conv1d


@dataclass
class MENDHyperParams:
    inner_params: list[str]
    edit_lr: float = 1e-4
    lr: float = 1e-6
    # read as the reference reads it; its optimiser never steps (see the module docstring)
    lr_lr: float = 1e-4
    lr_scale: float = 1.0
    cedit: float = 0.1
    cloc: float = 1.0
    cbase: float = 1.0  # weighs a base-model loss only with train_base, which is not implemented
    rank: int = 1920
    n_hidden: int = 1
    init: str = "id"
    norm: bool = True
    combine: bool = True
    act: str = "relu"  # the reference's LRLinear clamps at 0 whatever this says; only relu is accepted
    mlp_class: str = "IDMLP"
    shared: bool = True
    one_sided: bool = False
    x_only: bool = False
    delta_only: bool = False
    dropout: float = 0.0
    train_base: bool = False
    # ZsRE records per training batch, and, as the released editor reads it, the chunk a batch of edits is
    # applied in (BaseEditor.batch_edit: chunks in sequence); batch_edit "joint": one edit over the batch
    batch_size: int = 1
    batch_edit: str = "chunks"
    accumulate_bs: int = 10
    max_iters: int = 100000
    # the reference trainer's schedule (BaseTrainer.run): a cap in epochs, the optimiser by its torch.optim
    # name, validation every val_interval batches on val_steps batches of val_batch_size held-out records,
    # the network kept at its best early_stop_key, stopping after early_stop_patience batches without a new best
    max_epochs: int | None = None
    opt: str = "Adam"
    val_interval: int = 1000
    val_steps: int = 500
    val_batch_size: int = 5
    early_stop_patience: int = 20000
    early_stop_key: str = "loss/total_edit_val"
    # the reference's bfloat16 training of the lower layers (both only together): not implemented, refused
    half: bool = False
    no_grad_layers: int | None = None
    grad_clip: float = 100.0
    max_length: int = 40
    archive: str | None = None  # a network trained by the reference code (see load_archive)
    edit_statistics: str = "reference"  # or "trained" (see the module docstring)
    edit_lr_order: str = "parameters"  # or "inner_params"
    train_fraction: float = 0.6
    seed: int = 42


# settings of the reference this package does not implement: key -> the value it supports
UNSUPPORTED = {"combine": True, "one_sided": False, "x_only": False, "delta_only": False, "init": "id",
               "mlp_class": "IDMLP", "act": "relu", "dropout": 0.0, "train_base": False}


# what early_stop_key may name: the validation averages of the reference's EditTrainer (lower is better)
VALIDATION_KEYS = ("loss/total_edit_val", "loss/edit_val", "loss/loc_val")


def check_hparams(hp: MENDHyperParams) -> None:
    for key, supported in UNSUPPORTED.items():
        if getattr(hp, key) != supported:
            raise HparamsError(f"MEND {key}: {getattr(hp, key)!r} is not implemented (only {supported!r}, the paper's "
                               "setting)")
    if hp.edit_statistics not in ("reference", "trained"):
        raise HparamsError(f"edit_statistics {hp.edit_statistics!r}: choose 'reference' or 'trained'")
    if hp.edit_lr_order not in ("parameters", "inner_params"):
        raise HparamsError(f"edit_lr_order {hp.edit_lr_order!r}: choose 'parameters' or 'inner_params'")
    if hp.half or hp.no_grad_layers is not None:
        raise HparamsError(f"MEND half: {hp.half!r}, no_grad_layers: {hp.no_grad_layers!r}: the reference's bfloat16 "
                           "training of the layers below no_grad_layers is not implemented; set half: false and "
                           "no_grad_layers: null (the paper's setting: full precision)")
    if not isinstance(getattr(torch.optim, str(hp.opt), None), type):
        raise HparamsError(f"MEND opt {hp.opt!r} is not an optimiser of torch.optim (the paper's: 'Adam')")
    if hp.early_stop_key not in VALIDATION_KEYS:
        raise HparamsError(f"MEND early_stop_key {hp.early_stop_key!r}: choose one of {VALIDATION_KEYS} (the paper's: "
                           "'loss/total_edit_val')")
    for key in ("val_interval", "val_steps", "val_batch_size", "max_iters"):
        if int(getattr(hp, key)) < 1:
            raise HparamsError(f"MEND {key} must be at least 1, got {getattr(hp, key)!r}")
    if hp.max_epochs is not None and int(hp.max_epochs) < 1:
        raise HparamsError(f"MEND max_epochs must be at least 1 or null, got {hp.max_epochs!r}")


def split_zsre(records, fraction: float = 0.6, seed: int = 42):
    """``(train, held_out)``: a fixed, seeded split of the ZsRE records by ``case_id``."""
    ids = sorted(r.case_id for r in records)
    random.Random(seed).shuffle(ids)
    train_ids = set(ids[: int(fraction * len(ids))])
    return [r for r in records if r.case_id in train_ids], [r for r in records if r.case_id not in train_ids]


class LowRankLayer(nn.Module):
    """The reference's ``LRLinear`` (``init: id``): ``z ← clamp(s ⊙ (U V z + b) + c, min=0) + z``
    with ``U [dim, rank]`` zero, ``V [rank, dim]`` standard normal, and per-weight ``s``
    (ones) and ``c`` (zeros) when the network is shared by ``n_modes`` weights."""

    def __init__(self, dim: int, rank: int, n_modes: int | None):
        super().__init__()
        self.u = nn.Parameter(torch.zeros(dim, rank))
        self.v = nn.Parameter(torch.randn(rank, dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        if n_modes:
            self.mode_scale = nn.Parameter(torch.ones(n_modes, dim))
            self.mode_shift = nn.Parameter(torch.zeros(n_modes, dim))
        self.shared = bool(n_modes)

    def forward(self, z, mode: int | None = None):
        h = (z @ self.v.T) @ self.u.T + self.bias
        if self.shared:
            h = h * self.mode_scale[mode] + self.mode_shift[mode]
        return h.clamp(min=0) + z


class GradientTransform(nn.Module):
    """Maps ``(x [N, in], δ [N, out])`` to ``(x̃, δ̃)`` for the ``n_modes`` weights of one shape
    (``n_modes`` None: one weight, no per-weight scale and shift)."""

    def __init__(self, x_dim: int, delta_dim: int, hp: MENDHyperParams, n_modes: int | None):
        super().__init__()
        dim = x_dim + delta_dim
        self.x_dim = x_dim
        self.layers = nn.ModuleList([LowRankLayer(dim, min(hp.rank, dim), n_modes) for _ in range(hp.n_hidden + 1)])
        self.norm = hp.norm
        # Welford's running mean and sum of squared deviations of the rows [x; δ], and their count
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("sq_dev", torch.zeros(dim))
        self.register_buffer("count", torch.zeros(()))

    def restart_statistics(self) -> None:
        """The next rows seen in training mode start the statistics afresh (the reference's
        ``norm_init`` flag, which a loaded network does not carry)."""
        self.count.zero_()

    def _update_statistics(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        if n == 0:
            return
        m_b = rows.mean(0)
        s_b = ((rows - m_b) ** 2).sum(0)
        k = self.count
        if k == 0:
            self.mean.copy_(m_b)
            self.sq_dev.copy_(s_b)
        else:  # Chan et al.'s merge: the same result as the reference's row-by-row Welford loop
            d = m_b - self.mean
            tot = k + n
            self.mean.add_(d * n / tot)
            self.sq_dev.add_(s_b + d ** 2 * k * n / tot)
        self.count.add_(n)

    def forward(self, x, delta, mode: int | None = None):
        z = torch.cat([x, delta], dim=-1).float()
        if self.norm:
            if self.training:
                with torch.no_grad():
                    self._update_statistics(z)
            if self.count < 2:
                raise EditError(f"MEND's normalisation needs at least two gradient rows, it has seen {int(self.count)}")
            std = (self.sq_dev / (self.count - 1)).sqrt()
            z = (z - self.mean) / (std + 1e-7)
        for layer in self.layers:
            z = layer(z, mode)
        return z[..., : self.x_dim], z[..., self.x_dim:]


def shape_key(in_dim: int, out_dim: int) -> str:
    """The reference's name for the network shared by weights of one shape: ``str((in, out))``."""
    return str((in_dim, out_dim))


class MEND(nn.Module):
    """One :class:`GradientTransform` per weight shape (``shared``; otherwise per weight), a
    learnt step per weight (``edit_lrs``, in ``inner_params`` order)."""

    def __init__(self, model, hp: MENDHyperParams):
        super().__init__()
        self.names = list(hp.inner_params)
        self.hp = hp
        groups: dict[str, tuple[int, int, list[str]]] = {}
        self.modes = []
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise HparamsError(f"inner_params {missing} are not parameters of the model")
        for name in self.names:
            module = get_module(model, name.rsplit(".", 1)[0])
            w = module.weight
            out_dim, in_dim = (w.shape[1], w.shape[0]) if is_conv1d(module) else w.shape
            key = shape_key(in_dim, out_dim) if hp.shared else name.replace(".", "#")
            groups.setdefault(key, (in_dim, out_dim, []))[2].append(name)
            self.modes.append((key, len(groups[key][2]) - 1 if hp.shared else None))
        self.transforms = nn.ModuleDict({k: GradientTransform(i, o, hp, len(ns) if hp.shared else None)
                                         for k, (i, o, ns) in groups.items()})
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), float(hp.edit_lr)))
        order = [n for n in params if n in set(self.names)]
        # the step each weight gets at edit time (mend_main walks the model's parameters)
        self.edit_step_index = ([order.index(n) for n in self.names] if hp.edit_lr_order == "parameters"
                                else list(range(len(self.names))))

    def updates(self, factors: dict, at_edit: bool = False) -> dict[str, torch.Tensor]:
        """``{name: ΔW as [out, in]}`` from ``{name: (x [N, in], δ [N, out])}`` (rows whose x or
        δ is all zero are dropped first). ``at_edit``: take the steps in the edit-time order."""
        out = {}
        for i, name in enumerate(self.names):
            x, delta = factors[name]
            keep = (x != 0).any(-1) & (delta != 0).any(-1)
            key, mode = self.modes[i]
            x2, d2 = self.transforms[key](x[keep], delta[keep], mode)
            step = self.edit_lrs[self.edit_step_index[i] if at_edit else i]
            out[name] = step * (d2.T @ x2)
        return out

    def restart_statistics(self) -> None:
        for t in self.transforms.values():
            t.restart_statistics()


# ------------------------------------------------------------------ batches and losses
def edit_batch(tok, prompts, targets, device, label_space: bool = True, max_length: int | None = None):
    """``(ids, mask, labels)``: ``prompt + " " + target`` left-padded with the padding token,
    and the targets' tokens (``tok(target)``, with the leading space at edit time, without it in
    training, as the reference's ``mend_main`` and ZsRE collation encode them) left-padded. At
    edit time the padded labels are kept (the reference scores them); in training they are -100.
    ``max_length``: keep each encoding's first tokens (training: the reference's ZsRE collation
    truncates at 40)."""
    targets = [(" " if t[:1] != " " else "") + t if label_space else t for t in targets]
    texts = [p + (t if label_space else " " + t) for p, t in zip(prompts, targets)]
    enc = [tok(t, add_special_tokens=True).input_ids[:max_length] for t in texts]
    lab = [tok(t, add_special_tokens=True).input_ids[:max_length] for t in targets]
    ids, mask = pad(enc, pad_id(tok), device)
    labels, lmask = pad(lab, pad_id(tok), device)
    if not label_space:
        labels = labels.masked_fill(lmask == 0, -100)
    return ids, mask, labels


def target_nll(logits, labels):
    """The reference's ``multiclass_log_probs`` NLL: the labels right-aligned against the
    predictions of the last ``T`` positions before the final one, averaged over the labelled
    tokens of the batch."""
    t = labels.shape[1]
    pred = logits[:, :-1][:, -t:].float()
    logp = torch.log_softmax(pred, dim=-1)
    keep = labels != -100
    return -(logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()


def gradient_factors(model, tok, requests, names, batch=None) -> dict:
    """``{name: (x [B·L, in], δ [B·L, out])}``: each inner module's input and the gradient of the
    edit NLL at its output, over every position of the edit batch (``batch``: ``(ids, mask,
    labels)``; default the edit-time batch of ``requests``)."""
    device = next(model.parameters()).device
    ids, mask, labels = batch if batch is not None else edit_batch(
        tok, [r.prompt for r in requests], [r.target_new for r in requests], device)
    seen, handles = {}, []
    for name in names:
        module = get_module(model, name.rsplit(".", 1)[0])

        def hook(m, args, out, name=name):
            seen[name] = (args[0].detach(), out)
        handles.append(module.register_forward_hook(hook))
    params = dict(model.named_parameters())
    flags = {n: params[n].requires_grad for n in names}
    for n in names:
        params[n].requires_grad_(True)
    try:
        loss = target_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
        grads = torch.autograd.grad(loss, [seen[n][1] for n in names])
    finally:
        for h in handles:
            h.remove()
        for n, f in flags.items():
            params[n].requires_grad_(f)
    return {n: (seen[n][0].reshape(-1, seen[n][0].shape[-1]).float(), g.reshape(-1, g.shape[-1]).float())
            for n, g in zip(names, grads)}


def _to_layout(model, name, upd):
    module = get_module(model, name.rsplit(".", 1)[0])
    return upd.T if is_conv1d(module) else upd


def locality_batch(tok, records, device, max_length: int | None = None):
    """``(ids, mask, kl_mask)``: ``loc + " " + loc_ans``, and which of the last positions the
    KL reads (as many as ``tok(loc_ans)`` has tokens, its attention mask); each encoding cut to
    its first ``max_length`` tokens."""
    texts = [r.locality_prompt + " " + r.locality_answer for r in records]
    ids, mask = pad([tok(t, add_special_tokens=True).input_ids[:max_length] for t in texts], pad_id(tok), device)
    _, kl_mask = pad([tok(r.locality_answer, add_special_tokens=True).input_ids[:max_length] for r in records],
                     pad_id(tok), device)
    return ids, mask, kl_mask


def edit_losses(net: MEND, model, tok, batch, hp: MENDHyperParams, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edit_loss, loc_kl)`` of one training or validation batch (records), as EditTrainer's
    ``edit_step``: the edit's NLL of the target after the prompt, and the KL of the locality
    answer's positions from the unedited model's. The network's normalising statistics are
    updated only in training mode (``net.train()``), as in the reference."""
    from torch.func import functional_call

    device = next(model.parameters()).device
    params = dict(model.named_parameters())
    edit_in = edit_batch(tok, [r.prompt for r in batch], [r.target_new for r in batch], device, label_space=False,
                         max_length=hp.max_length)
    lids, lmask, kl_mask = locality_batch(tok, batch, device, hp.max_length)
    n_kl = kl_mask.shape[1]
    with torch.no_grad():
        base = torch.log_softmax(model(input_ids=lids, attention_mask=lmask).logits[:, -n_kl:].float(), -1)
    factors = gradient_factors(model, tok, batch, net.names, batch=edit_in)
    upd = net.updates(factors)
    new = {n: params[n] + _to_layout(model, n, upd[n]).to(params[n].dtype) for n in net.names}
    edited = lambda ids, mask: functional_call(model, new, args=(), kwargs={"input_ids": ids, "attention_mask": mask})  # noqa: E731
    with torch.set_grad_enabled(grad):  # validation: no graph through the edited model
        edit_loss = target_nll(edited(edit_in[0], edit_in[1]).logits, edit_in[2])
        post = torch.log_softmax(edited(lids, lmask).logits[:, -n_kl:].float(), -1)
        kl = (base.exp() * (base - post)).sum(-1)
        return edit_loss, (kl * kl_mask).sum() / kl_mask.sum()


def validation_losses(net: MEND, model, tok, records, hp: MENDHyperParams) -> dict[str, float]:
    """EditTrainer's ``validate``: the network in evaluation mode (its statistics frozen) on the
    first ``val_steps`` batches of ``val_batch_size`` records (in order), each batch's losses
    averaged over the batches: ``{key: value}`` for every key of :data:`VALIDATION_KEYS`."""
    was = net.training
    net.eval()
    sums = dict.fromkeys(VALIDATION_KEYS, 0.0)
    steps = 0
    try:
        for start in range(0, len(records), hp.val_batch_size):
            if steps >= hp.val_steps:
                break
            edit_loss, loc_kl = edit_losses(net, model, tok, records[start:start + hp.val_batch_size], hp, grad=False)
            e, loc = float(edit_loss.detach()), float(loc_kl.detach())
            sums["loss/edit_val"] += e
            sums["loss/loc_val"] += loc
            sums["loss/total_edit_val"] += hp.cedit * e + hp.cloc * loc
            steps += 1
    finally:
        net.train(was)
    return {k: v / max(steps, 1) for k, v in sums.items()}


def train_mend(model, tok, records, hp: MENDHyperParams, progress: bool = True,
               val_records=None) -> tuple[MEND, dict]:
    """Train MEND on ``records`` (the training split) as the reference's ``EditTrainer`` and
    ``BaseTrainer.run`` do, validating on ``val_records`` (the reference validates on the ZsRE
    file its edits come from: here the held-out split). Returns the network kept — the one with
    the best validation ``early_stop_key``, as the reference's checkpoint; the last one where no
    validation ran — and a log: per-batch losses, ``validations`` ``[(batch, {key: value})]``,
    ``kept_step`` and ``kept_value``.

    The schedule is the reference's, quirks included: ``max_iters`` capped at ``max_epochs ×
    len(records)`` (records, not batches); ``round(max_iters / (len(records) / batch_size))``
    epochs, each a fresh shuffle; batches counted from 1 and the loop left at count ``max_iters``
    (``max_iters − 1`` batches at most); a validation every ``val_interval`` batches; early stopping
    (no new best for ``early_stop_patience`` batches) ends the epoch it happens in, and each
    later epoch at its next validation (the reference's ``break`` leaves the inner loop only)."""
    check_hparams(hp)
    torch.manual_seed(hp.seed)
    rng = random.Random(hp.seed)
    net = MEND(model, hp).to(next(model.parameters()).device).train()
    outer = list(net.parameters())
    opt = getattr(torch.optim, hp.opt)(outer, lr=hp.lr)
    log = {"edit_loss": [], "loc_kl": [], "skipped": 0, "validations": [], "kept_step": None, "kept_value": None}
    accumulated = [torch.zeros_like(p) for p in outer]
    max_iters = hp.max_iters if hp.max_epochs is None else min(hp.max_iters, hp.max_epochs * len(records))
    epochs = round(max_iters / (len(records) / hp.batch_size))
    best, best_value, best_step, stop = None, math.inf, 0, False
    it = 0
    bar = tqdm(total=max(min(max_iters - 1, epochs * -(-len(records) // hp.batch_size)), 0), desc="training MEND",
               disable=not progress, leave=False)
    for _ in range(epochs):
        order = list(records)
        rng.shuffle(order)
        for start in range(0, len(order), hp.batch_size):
            it += 1
            if it >= max_iters:
                break
            edit_loss, loc_kl = edit_losses(net, model, tok, order[start:start + hp.batch_size], hp)
            loss = hp.cedit * edit_loss + hp.cloc * loc_kl
            grads = torch.autograd.grad(loss, outer, allow_unused=True)
            if all(g is None or torch.isfinite(g).all() for g in grads):
                for a, g in zip(accumulated, grads):
                    if g is not None:
                        a.add_(g / hp.accumulate_bs)
            else:
                log["skipped"] += 1
            if it % hp.accumulate_bs == 0:
                for p, a in zip(outer, accumulated):
                    p.grad = a.clone()
                torch.nn.utils.clip_grad_norm_(outer, hp.grad_clip)
                opt.step()
                opt.zero_grad()
                for a in accumulated:
                    a.zero_()
            log["edit_loss"].append(edit_loss.item())
            log["loc_kl"].append(loc_kl.item())
            bar.update()
            if it % hp.val_interval == 0 and val_records:
                values = validation_losses(net, model, tok, val_records, hp)
                log["validations"].append((it, values))
                if values[hp.early_stop_key] < best_value:  # a new best: the reference saves this checkpoint
                    best_value, best_step = values[hp.early_stop_key], it
                    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
                stop |= it - best_step >= hp.early_stop_patience
                if stop:
                    break
    bar.close()
    if best is not None:
        net.load_state_dict(best)
        log["kept_step"], log["kept_value"] = best_step, best_value
    else:  # no validation ran: the reference would have no checkpoint of its own; the last iterate is kept
        log["kept_step"] = it - 1 if it >= max_iters else it
    return net, log


# ------------------------------------------------------------------ the reference's checkpoints
def load_archive(path, net: MEND) -> None:
    """Load a network trained by the reference code into ``net``: its ``torch.save`` file (read
    with ``weights_only=True``; the model configuration it holds is allowed as data) or that
    file's ``"model"`` dictionary saved as safetensors. Keys: ``edit_lrs``,
    ``mend.<shape>.{u_mean,v_mean,u_s,v_s,k,...}`` and
    ``mend.<shape>.mlp.layers.<i>.{u,v,bias,mode_scale.weight,mode_shift.weight}`` (``gtn.``
    in older files)."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"the MEND archive {path} does not exist: point archive at a network trained by the "
                         "reference code, or set archive: null to train one here")
    if path.suffix == ".safetensors":
        state = load_safetensors(path, "convert the reference's checkpoint again")
    else:
        import transformers

        allowed = [getattr(transformers, c) for c in dir(transformers) if c.endswith("Config") and
                   isinstance(getattr(transformers, c, None), type)]
        with torch.serialization.safe_globals(allowed):
            blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob.get("model", blob) if isinstance(blob, dict) else blob
    state = {k.replace("gtn.", "mend.", 1) if k.startswith("gtn.") else k: v for k, v in state.items()
             if isinstance(v, torch.Tensor) and not k.startswith("model.")}
    mine = {}
    for key, t in net.transforms.items():
        src = f"mend.{key}"
        need = [f"{src}.{s}" for s in ("u_mean", "v_mean", "u_s", "v_s", "k")]
        absent = [n for n in need if n not in state]
        if absent:
            raise CacheError(f"{path} has no {absent[0]!r}: not a MEND checkpoint for these inner_params "
                             f"(it holds {sorted(state)[:6]} ...)")
        mine[f"transforms.{key}.mean"] = torch.cat([state[f"{src}.u_mean"], state[f"{src}.v_mean"]])
        mine[f"transforms.{key}.sq_dev"] = torch.cat([state[f"{src}.u_s"], state[f"{src}.v_s"]])
        mine[f"transforms.{key}.count"] = state[f"{src}.k"].reshape(())
        for i in range(len(t.layers)):
            a, b = f"{src}.mlp.layers.{i}", f"transforms.{key}.layers.{i}"
            for name in ("u", "v", "bias"):
                mine[f"{b}.{name}"] = state[f"{a}.{name}"]
            if t.layers[i].shared:
                mine[f"{b}.mode_scale"] = state[f"{a}.mode_scale.weight"]
                mine[f"{b}.mode_shift"] = state[f"{a}.mode_shift.weight"]
    mine["edit_lrs"] = state["edit_lrs"]
    try:
        net.load_state_dict(mine)
    except RuntimeError as e:
        raise CacheError(f"{path} does not fit these inner_params ({str(e).splitlines()[0]})") from None


# the revision of train_mend: a network cached by another revision is trained again (3: the reference's
# schedule in epochs, validation, the best-validation network kept)
TRAINING_REVISION = 3


def _cache_key(model_name: str, hp: MENDHyperParams) -> str:
    at_edit_only = {"edit_statistics", "edit_lr_order", "lr_scale", "archive", "batch_edit"}
    settings = {k: v for k, v in asdict(hp).items() if k not in at_edit_only}
    blob = json.dumps({**settings, "training_revision": TRAINING_REVISION}, sort_keys=True)
    return f"{model_name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def load_or_train(model, tok, hp: MENDHyperParams, model_name: str, records=None, progress=True) -> MEND:
    """The trained MEND network for this model and hparams: the reference's checkpoint
    (``archive``), or from the safetensors cache, or trained on the training split of ZsRE and
    saved there."""
    check_hparams(hp)
    device = next(model.parameters()).device
    net = MEND(model, hp).to(device)
    if hp.archive:
        load_archive(hp.archive, net)
        return net.to(device)
    path = cache_dir("mend") / f"{_cache_key(model_name, hp)}.safetensors"
    if path.exists():
        state = load_safetensors(path, "delete it and the network is trained again")
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CacheError(f"{path} does not hold this MEND network's weights ({str(e).splitlines()[0]}): "
                             "delete it and the network is trained again") from None
        return net
    if records is None:
        from ..data import load_zsre

        records = load_zsre()
    train, held_out = split_zsre(records, hp.train_fraction, hp.seed)
    if not train:
        raise EditError("no ZsRE records to train MEND on")
    net, log = train_mend(model, tok, train, hp, progress, val_records=held_out)
    if not log["edit_loss"]:
        raise HparamsError(f"MEND max_iters {hp.max_iters} (max_epochs {hp.max_epochs}) is under half an epoch of the "
                           f"{len(train)} training records: the reference's schedule rounds that to 0 epochs and "
                           "trains nothing. Raise max_iters")
    save_safetensors(net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"hparams": asdict(hp), "train_records": len(train),
                                                     "validation_records": len(held_out),
                                                     "batches": len(log["edit_loss"]),
                                                     "validations": log["validations"],
                                                     "kept_step": log["kept_step"], "kept_value": log["kept_value"],
                                                     "skipped_batches": log["skipped"],
                                                     "edit_loss_first_last": [log["edit_loss"][0], log["edit_loss"][-1]],
                                                     "loc_kl_first_last": [log["loc_kl"][0], log["loc_kl"][-1]]}, indent=1))
    return net


# the trained networks, once per process (training takes minutes): per model object and settings
_NETS: dict = {}


class SequenceStatistics(dict):
    """MEND's state along a sequence, with ``edit_statistics: reference``: per network, the
    normalising statistics its edits have gathered so far (a new sequence starts without, so
    they restart at its first edit, as in a fresh run of the reference)."""

    def load_into(self, key, net: MEND) -> None:
        if key not in self:
            net.restart_statistics()
            return
        for name, buffer in net.named_buffers():
            buffer.copy_(self[key][name])

    def keep(self, key, net: MEND) -> None:
        self[key] = {name: buffer.detach().clone() for name, buffer in net.named_buffers()}


def editable_records(records, hparams=None) -> list:
    """The ZsRE records MEND may edit: its held-out split (``hparams``: None, a dict of overrides
    or an hparams object; its ``train_fraction`` and ``seed`` make the split)."""
    given = vars(hparams) if isinstance(hparams, MENDHyperParams) else hparams if isinstance(hparams, dict) else {}
    fraction = given.get("train_fraction", MENDHyperParams.train_fraction)
    split_seed = given.get("seed", MENDHyperParams.seed)
    return split_zsre(list(records), fraction, split_seed)[1]


def apply(model, tok, requests, hp: MENDHyperParams, statistics: SequenceStatistics) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` of one MEND edit of ``requests``; with
    ``edit_statistics: reference`` the network's normalising statistics go on from the sequence's
    earlier edits (``statistics``, updated in place)."""
    check_hparams(hp)
    records = _all_records()
    train = {r.case_id for r in split_zsre(records, hp.train_fraction, hp.seed)[0]} if records and not hp.archive else set()
    leaked = [r.case_id for r in requests if r.case_id >= 0 and r.case_id in train]
    if leaked:
        raise EditError(f"ZsRE record(s) {leaked[:5]} are in MEND's training split: edit held-out records "
                        "(helpers.editing.mend.split_zsre(records)[1])")
    key = (id(model), _cache_key(files_name(model), hp), hp.archive, hp.edit_lr_order, hp.edit_statistics)
    if key not in _NETS:
        _NETS[key] = load_or_train(model, tok, hp, files_name(model), records or None)
    net = _NETS[key]
    reference = hp.edit_statistics == "reference"
    net.train(reference)
    if reference:
        statistics.load_into(key, net)
    factors = gradient_factors(model, tok, requests, net.names)
    with torch.no_grad():
        updates = {n: hp.lr_scale * u for n, u in net.updates(factors, at_edit=True).items()}
    if reference:
        statistics.keep(key, net)
    return updates


_RECORDS: dict = {}


def _all_records():
    """The ZsRE records, read once per data folder (every MEND edit checks them)."""
    from ..data import load_zsre
    from ..errors import DataNotFoundError
    from ..paths import data_dir

    try:
        folder = data_dir()
    except DataNotFoundError:  # no data: nothing to check against
        return []
    if folder not in _RECORDS:
        _RECORDS[folder] = load_zsre(folder)
    return _RECORDS[folder]


__all__ = ["MENDHyperParams", "MEND", "GradientTransform", "LowRankLayer", "train_mend", "load_or_train", "load_archive",
           "gradient_factors", "edit_batch", "target_nll", "split_zsre", "SequenceStatistics",
           "editable_records"]
