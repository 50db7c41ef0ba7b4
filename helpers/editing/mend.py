"""MEND (Mitchell et al., 2022): a trained network turns a fine-tuning gradient into an edit.

The gradient of a weight on one example is a sum of rank-1 terms ``δ_t u_tᵀ`` (``u_t`` the
layer's input at token ``t``, ``δ_t`` the loss gradient at its output). MEND normalises each
``[u_t; δ_t]``, passes it through a small MLP with a low-rank residual layer (identity at
initialisation, shared by weights of the same shape, with a learnt scale and shift per
weight), and builds the update ``ΔW = −η Σ_t δ'_t u'_tᵀ`` with a learnt step ``η`` per weight.
It is trained so that the edited model predicts the new target (``cedit``) while its
predictions on unrelated prompts stay put (``cloc``, a KL term).

The training file of the paper (zsre_mend_train.json) is not distributed: MEND is trained on a
fixed split of the 1037 ZsRE records (:func:`split_zsre`), and editing a record of the
training split is refused.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..paths import cache_dir
from ..errors import CacheError, EditError
from ..files import load_safetensors, save_safetensors
from ..model.batching import encode_padded, pad, pad_id
from ..model.loading import short_name
from .modules import get_module, is_conv1d


@dataclass
class MENDHyperParams:
    inner_params: list[str]
    edit_lr: float = 1e-4
    lr: float = 1e-4
    lr_lr: float = 1e-4
    lr_scale: float = 1.0
    cedit: float = 0.1
    cloc: float = 1.0
    rank: int = 64
    n_hidden: int = 1
    init: str = "id"
    norm: bool = True
    combine: bool = True
    act: str = "relu"
    mlp_class: str = "IDMLP"
    shared: bool = True
    one_sided: bool = False
    x_only: bool = False
    delta_only: bool = False
    dropout: float = 0.0
    train_steps: int = 300
    train_batch_size: int = 4
    train_fraction: float = 0.6
    seed: int = 42
    max_length: int = 40
    cbase: float = 1.0
    layers: list[int] | None = None


def split_zsre(records, fraction: float = 0.6, seed: int = 42):
    """``(train, held_out)``: a fixed, seeded split of the ZsRE records by ``case_id``."""
    ids = sorted(r.case_id for r in records)
    random.Random(seed).shuffle(ids)
    train_ids = set(ids[: int(fraction * len(ids))])
    return [r for r in records if r.case_id in train_ids], [r for r in records if r.case_id not in train_ids]


class LowRankResidual(nn.Module):
    """``x + act(B A x + b)``: the identity at initialisation (``B`` and ``b`` start at zero);
    ``act`` is ReLU in hidden layers (MEND's ``LRLinear`` with ``init: id``)."""

    def __init__(self, dim: int, rank: int, relu: bool):
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, dim) / dim ** 0.5)
        self.b = nn.Parameter(torch.zeros(dim, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.relu = relu

    def forward(self, x):
        pre = (x @ self.a.T) @ self.b.T + self.bias
        return x + (torch.relu(pre) if self.relu else pre)


class GradientTransform(nn.Module):
    """Maps ``(u, δ)`` to ``(u', δ')`` for ``n_modes`` weights of one shape."""

    def __init__(self, x_dim: int, delta_dim: int, hp: MENDHyperParams, n_modes: int):
        super().__init__()
        dim = x_dim + delta_dim
        self.x_dim = x_dim
        self.layers = nn.ModuleList([LowRankResidual(dim, hp.rank, relu=i < hp.n_hidden) for i in range(hp.n_hidden + 1)])
        self.mode_scale = nn.Parameter(torch.ones(n_modes, dim))
        self.mode_shift = nn.Parameter(torch.zeros(n_modes, dim))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))
        self.norm = hp.norm

    def forward(self, u, delta, mode: int):
        x = torch.cat([u, delta], dim=-1)
        if self.norm:
            if self.training:  # running statistics of the inputs (Welford, batched)
                with torch.no_grad():
                    n, m, v = x.shape[0], x.mean(0), x.var(0, unbiased=False)
                    tot = self.count + n
                    d = m - self.mean
                    self.mean += d * n / tot
                    self.var.copy_((self.var * self.count + v * n + d ** 2 * self.count * n / tot) / tot)
                    self.count.copy_(tot)
            x = (x - self.mean) / (self.var.sqrt() + 1e-6)
        x = x * self.mode_scale[mode] + self.mode_shift[mode]
        for layer in self.layers:
            x = layer(x)
        return x[..., : self.x_dim], x[..., self.x_dim:]


class MEND(nn.Module):
    """One :class:`GradientTransform` per weight shape, a learnt step per weight."""

    def __init__(self, model, hp: MENDHyperParams):
        super().__init__()
        self.names = list(hp.inner_params)
        shapes = {}
        self.modes = []
        for name in self.names:
            module = get_module(model, name.rsplit(".", 1)[0])
            w = module.weight
            out_dim, in_dim = (w.shape[1], w.shape[0]) if is_conv1d(module) else w.shape
            key = f"{in_dim}x{out_dim}"
            shapes.setdefault(key, (in_dim, out_dim, []))[2].append(name)
            self.modes.append((key, len(shapes[key][2]) - 1))
        self.transforms = nn.ModuleDict({k: GradientTransform(i, o, hp, len(ns)) for k, (i, o, ns) in shapes.items()})
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), float(hp.edit_lr)))

    def updates(self, factors: dict) -> dict[str, torch.Tensor]:
        """``{name: ΔW as [out, in]}`` from ``{name: (u [N, in], δ [N, out])}``."""
        out = {}
        for i, name in enumerate(self.names):
            u, delta = factors[name]
            key, mode = self.modes[i]
            u2, d2 = self.transforms[key](u, delta, mode)
            out[name] = -self.edit_lrs[i] * (d2.T @ u2)
        return out


def _target_batch(tok, requests, device, prompt_attr="prompt"):
    texts, spans = [], []
    for r in requests:
        prompt = getattr(r, prompt_attr)
        target = tok(" " + r.target_new.strip(), add_special_tokens=False).input_ids
        p = tok(prompt, add_special_tokens=True).input_ids
        texts.append(p + target)
        spans.append((len(p), len(target)))
    ids, mask = pad(texts, pad_id(tok), device, side="right")
    labels = torch.full_like(ids, -100)
    for r, (t, (start, n)) in enumerate(zip(texts, spans)):
        labels[r, start - 1: start - 1 + n] = torch.tensor(t[start: start + n])
    return ids, mask, labels


def _nll(logits, labels):
    logp = torch.log_softmax(logits.float(), dim=-1)
    keep = labels != -100
    return -(logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()


def gradient_factors(model, tok, requests, names) -> dict:
    """``{name: (u, δ)}`` over the real tokens of the edit batch (prompt + target)."""
    device = next(model.parameters()).device
    ids, mask, labels = _target_batch(tok, requests, device)
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
        loss = _nll(model(input_ids=ids, attention_mask=mask).logits, labels)
        outs = [seen[n][1] for n in names]
        grads = torch.autograd.grad(loss, outs)
    finally:
        for h in handles:
            h.remove()
        for n, f in flags.items():
            params[n].requires_grad_(f)
    keep = mask.bool()
    return {n: (seen[n][0][keep].float(), g[keep].float()) for n, g in zip(names, grads)}


def _to_layout(model, name, upd):
    module = get_module(model, name.rsplit(".", 1)[0])
    return upd.T if is_conv1d(module) else upd


def train_mend(model, tok, records, hp: MENDHyperParams, progress: bool = True) -> tuple[MEND, dict]:
    """Train MEND on ``records`` (the training split). Returns the network and a log."""
    from torch.func import functional_call

    torch.manual_seed(hp.seed)
    rng = random.Random(hp.seed)
    device = next(model.parameters()).device
    net = MEND(model, hp).to(device)
    opt = torch.optim.Adam([{"params": [p for n, p in net.named_parameters() if n != "edit_lrs"], "lr": hp.lr},
                            {"params": [net.edit_lrs], "lr": hp.lr_lr}])
    params = dict(model.named_parameters())
    log = {"edit_loss": [], "loc_kl": []}
    for _ in tqdm(range(hp.train_steps), desc="training MEND", disable=not progress, leave=False):
        batch = rng.sample(records, hp.train_batch_size)
        factors = gradient_factors(model, tok, batch, net.names)
        upd = net.updates(factors)
        new = {n: params[n] + _to_layout(model, n, upd[n]).to(params[n].dtype) for n in net.names}
        ids, mask, labels = _target_batch(tok, batch, device)
        edit_loss = _nll(functional_call(model, new, args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits, labels)
        loc = [r.locality_prompt for r in rng.sample(records, hp.train_batch_size)]
        lids, lmask = encode_padded(tok, loc, device)
        with torch.no_grad():
            base = torch.log_softmax(model(input_ids=lids, attention_mask=lmask).logits.float(), -1)
        post = torch.log_softmax(functional_call(model, new, args=(), kwargs={"input_ids": lids, "attention_mask": lmask}).logits.float(), -1)
        kl = (torch.exp(base) * (base - post)).sum(-1)
        loc_kl = (kl * lmask).sum() / lmask.sum()
        loss = hp.cedit * edit_loss + hp.cloc * loc_kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["edit_loss"].append(edit_loss.item())
        log["loc_kl"].append(loc_kl.item())
    net.eval()
    return net, log


def _cache_key(model_name: str, hp: MENDHyperParams) -> str:
    blob = json.dumps({k: v for k, v in asdict(hp).items() if k != "layers"}, sort_keys=True)
    return f"{model_name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def load_or_train(model, tok, hp: MENDHyperParams, model_name: str, records=None, progress=True) -> MEND:
    """The trained MEND network for this model and hparams: from the safetensors cache, or
    trained on the training split of ZsRE and saved there."""
    path = cache_dir("mend") / f"{_cache_key(model_name, hp)}.safetensors"
    net = MEND(model, hp).to(next(model.parameters()).device)
    if path.exists():
        state = load_safetensors(path, "delete it and the network is trained again")
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CacheError(f"{path} does not hold this MEND network's weights ({str(e).splitlines()[0]}): "
                             "delete it and the network is trained again") from None
        return net.eval()
    if records is None:
        from ..data import load_zsre

        records = load_zsre()
    train, _ = split_zsre(records, hp.train_fraction, hp.seed)
    net, log = train_mend(model, tok, train, hp, progress)
    save_safetensors(net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"hparams": asdict(hp), "train_records": len(train),
                                                     "edit_loss_first_last": [log["edit_loss"][0], log["edit_loss"][-1]],
                                                     "loc_kl_first_last": [log["loc_kl"][0], log["loc_kl"][-1]]}, indent=1))
    return net


_NETS: dict = {}


def apply(model, tok, requests, hp: MENDHyperParams) -> dict[str, torch.Tensor]:

    records = _all_records()
    train = {r.case_id for r in split_zsre(records, hp.train_fraction, hp.seed)[0]} if records else set()
    leaked = [r.case_id for r in requests if r.case_id >= 0 and r.case_id in train]
    if leaked:
        raise EditError(f"ZsRE record(s) {leaked[:5]} are in MEND's training split: edit held-out records "
                        "(helpers.editing.mend.split_zsre(records)[1])")
    key = (id(model), _cache_key(short_name(model), hp))
    if key not in _NETS:
        _NETS[key] = load_or_train(model, tok, hp, short_name(model), records or None)
    net = _NETS[key]
    factors = gradient_factors(model, tok, requests, net.names)
    with torch.no_grad():
        return {n: hp.lr_scale * u for n, u in net.updates(factors).items()}


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
