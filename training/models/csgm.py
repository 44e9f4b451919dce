"""CSGM, DAAN's contrastive sample-level gradient modulation (DAAN §II.B, Eqs. 5-8), vectorised.

Per sample i (a positive and its negative) and per modality m ∈ {a, v} and QDMA part p:

    Eq. 6   δ_{x,y,z} = max(d(θ_x, θ_y) − d(θ_x, θ_z), 0)          anchor x, positive y, negative z
            V_c(a) = δ̂_{a+,w+,a−} · δ̂_{w+,a+,w−},   V_c(v) = δ̂_{v+,w+,v−} · δ̂_{w+,v+,w−}
    Eq. 7   V_o(m, p) = ‖G_i(m, p)‖² / ‖Θ(m, p)‖²
    Eq. 5   η_i(m, p) = max(V̂_c · V̂_o, γ)
    Eq. 8   Θ(m, p) ← Θ(m, p) − step(Σ_i η_i G_i + ε),   ε ~ N(0, Σ_i (η_i G_i − ḡ)(η_i G_i − ḡ)ᵀ)

(ˆ = divided by its largest value in the batch). G_i is sample i's contribution to the batch gradient of the part's
parameters: the gradient flowing into the parameters through sample i's own activations, so Σ_i G_i is the ordinary
batch gradient. For a linear map y = xWᵀ + b applied to the steps of every sample, G_i(W) = Σ_t Δ_it x_itᵀ with Δ the
gradient at the output; for a per-channel affine y = x̂·γ + β, G_i(γ) = Σ_t Δ_it ⊙ x̂_it. Their squared norms come
from step Gram matrices and any weighted sum Σ_i c_i G_i from one contraction, so neither per-sample gradients nor
per-sample backward passes are ever formed. The noise has exactly the stated covariance:
ε = Σ_i (z_i − z̄) η_i G_i with z ~ N(0, 1) per sample. Decisions and reasons: docs/models/daan.md.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import Affine, RecordableLinear


@dataclass(frozen=True)
class PackedRows:
    """Where the rows of a packed (N, ·) call come from: row j is step ``step[j]`` of sequence ``seq[j]`` of an
    (n_seqs, n_steps) padded batch."""
    seq: torch.Tensor
    step: torch.Tensor
    n_seqs: int
    n_steps: int

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (n_seqs, n_steps, C), zeros at padded steps."""
        out = x.new_zeros(self.n_seqs, self.n_steps, x.shape[-1])
        out[self.seq, self.step] = x
        return out


_PACKED: contextvars.ContextVar[PackedRows | None] = contextvars.ContextVar("csgm_packed_rows", default=None)


@contextlib.contextmanager
def packed_rows(rows: PackedRows) -> Iterator[None]:
    """Modules called inside this block get packed rows laid out as ``rows`` (recorded by :class:`GhostGrads`)."""
    token = _PACKED.set(rows)
    try:
        yield
    finally:
        _PACKED.reset(token)


def current_packed_rows() -> PackedRows | None:
    return _PACKED.get()


class GhostGrads:
    """Records, for chosen :class:`RecordableLinear`/:class:`Affine` modules, the inputs and output gradients of every
    call during one forward/backward, and turns them into per-sample squared gradient norms and sample-weighted
    gradients. While capturing, these modules accumulate no ordinary gradient: :func:`modulate` writes theirs.

    Calls whose batch is a multiple of the sample count (e.g. positives and negatives in one pass) are regrouped so
    that row i of every chunk belongs to sample i. Calls on packed steps (inside :func:`packed_rows`) are mapped back
    to their sequences."""

    def __init__(self, groups: dict[str, Sequence[nn.Module]]):
        for name, mods in groups.items():
            for m in mods:
                if not isinstance(m, (RecordableLinear, Affine)):
                    raise TypeError(f"CSGM group {name}: {type(m).__name__} is not supported "
                                    "(use RecordableLinear or Affine)")
        self.groups = {k: list(v) for k, v in groups.items()}
        self._records: dict[nn.Module, list[list]] = defaultdict(list)
        self._n = 0

    @contextlib.contextmanager
    def capture(self, n_samples: int) -> Iterator[None]:
        self._records.clear()
        self._n = n_samples
        modules = [m for mods in self.groups.values() for m in mods]
        for m in modules:
            m.recorder = self._recorder(m)
        try:
            yield
        finally:
            for m in modules:
                m.recorder = None

    def _recorder(self, module: nn.Module):
        def record(x: torch.Tensor) -> list:
            rec = [x.detach(), None, _PACKED.get()]  # input, output gradient (filled by backward), packed layout
            self._records[module].append(rec)
            return rec
        return record

    def _calls(self, module: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor, PackedRows | None]]:
        for x, d, packed in self._records.get(module, []):
            if d is not None:  # calls that did not reach the loss have no gradient
                yield x, d, packed

    def _check_split(self, x: torch.Tensor) -> None:
        if x.shape[0] % self._n:
            raise ValueError(f"CSGM: a call with batch {x.shape[0]} does not split into {self._n} samples")

    # ---------------------------------------------------------------------------------------------
    def _blocks(self, module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(input, output gradient) blocks of shape (n_samples, steps, ·): every call of the module, split into
        chunks of n_samples rows (row i of every chunk belongs to sample i)."""
        blocks = []
        for x, d, packed in self._calls(module):
            if packed is not None:
                x, d = packed.pad(x), packed.pad(d)
            elif x.dim() == 2:
                x, d = x[:, None], d[:, None]
            self._check_split(x)
            blocks.extend(zip(x.split(self._n), d.split(self._n)))
        return blocks

    def _per_sample_sums(self, module: Affine) -> tuple[torch.Tensor, torch.Tensor]:
        """An Affine's per-sample gradients themselves (they are only 2·C numbers): G_i(γ) = Σ d ⊙ x̂ and
        G_i(β) = Σ d over sample i's rows and steps."""
        g_w = g_b = 0
        for x, d, packed in self._calls(module):
            if packed is not None:
                sample = packed.seq % self._n
                dx = d.new_zeros(self._n, d.shape[-1]).index_add_(0, sample, d * x)
                dd = d.new_zeros(self._n, d.shape[-1]).index_add_(0, sample, d)
            else:
                self._check_split(x)
                rows = (d * x).reshape(x.shape[0], -1, x.shape[-1]).sum(1), d.reshape(d.shape[0], -1, d.shape[-1]).sum(1)
                dx, dd = (r.reshape(-1, self._n, r.shape[-1]).sum(0) for r in rows)
            g_w, g_b = g_w + dx, g_b + dd
        return g_w, g_b

    def sq_norms(self, group: str) -> torch.Tensor:
        """‖G_i‖² summed over the group's parameters, shape (n_samples,).

        For a linear map a sample's gradient is the sum over its blocks k of D_kᵀ X_k, so
        ‖G_i‖² = Σ_{k,l} Σ_{t,s} (d_kt·d_ls)(x_kt·x_ls): Gram products of the blocks, never the per-sample gradients
        themselves. An Affine's per-sample gradients are small and are formed directly."""
        total = None
        for m in self.groups[group]:
            if isinstance(m, Affine):
                if not any(True for _ in self._calls(m)):
                    continue
                g_w, g_b = self._per_sample_sums(m)
                part = g_w.pow(2).sum(-1) + g_b.pow(2).sum(-1)
            else:
                blocks = self._blocks(m)
                if not blocks:
                    continue
                part = 0
                for k, (xk, dk) in enumerate(blocks):
                    for l_, (xl, dl) in enumerate(blocks[k:], start=k):
                        w = ((dk @ dl.transpose(1, 2)) * (xk @ xl.transpose(1, 2))).sum((1, 2))
                        if m.bias is not None:
                            w = w + (dk.sum(1) * dl.sum(1)).sum(-1)
                        part = part + (1.0 if l_ == k else 2.0) * w
            total = part if total is None else total + part
        if total is None:
            raise RuntimeError(f"CSGM: nothing recorded for group {group!r}")
        return total

    def weighted_grads(self, group: str, weights: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """Σ_i weights_i · G_i for every parameter of the group: the output gradients of sample i's rows are scaled
        by weights_i and contracted with the inputs, one contraction per call."""
        out: dict[nn.Parameter, torch.Tensor] = {}
        for m in self.groups[group]:
            for x, d, packed in self._calls(m):
                if packed is not None:  # packed row j belongs to sequence seq[j], i.e. sample seq[j] mod n
                    row_w = weights.to(d.dtype)[packed.seq % self._n].unsqueeze(-1)
                else:
                    reps = d.shape[0] // self._n
                    row_w = weights.to(d.dtype).repeat(reps).view((-1,) + (1,) * (d.dim() - 1))
                dw = (d * row_w).reshape(-1, d.shape[-1])
                xf = x.reshape(-1, x.shape[-1])
                if isinstance(m, nn.Linear):
                    _accumulate(out, m.weight, dw.t() @ xf)
                    if m.bias is not None:
                        _accumulate(out, m.bias, dw.sum(0))
                else:
                    _accumulate(out, m.weight, (dw * xf).sum(0))
                    _accumulate(out, m.bias, dw.sum(0))
        return out

    def params(self, group: str) -> list[nn.Parameter]:
        ps = []
        for m in self.groups[group]:
            ps.append(m.weight)
            if getattr(m, "bias", None) is not None:
                ps.append(m.bias)
        return ps


def _accumulate(out: dict, param: nn.Parameter, grad: torch.Tensor) -> None:
    out[param] = grad if param not in out else out[param] + grad


def violation(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """δ = max(d(anchor, positive) − d(anchor, negative), 0) per sample (Eq. 6)."""
    return F.relu(F.pairwise_distance(anchor, positive) - F.pairwise_distance(anchor, negative))


def batch_normalise(x: torch.Tensor) -> torch.Tensor:
    """Divide by the batch maximum (values in [0, 1]); an all-zero batch stays zero."""
    return x / x.max().clamp(min=1e-12)


NORMALISE = ("joint", "modality")  # the scope of "normalized" in §II.B: both modalities together, or each alone
UPDATES = ("scale_step", "replace_gradient")  # how η reaches a QDMA part's update under an adaptive optimiser


def normalise_rates(values: dict[str, torch.Tensor], scope: str) -> dict[str, torch.Tensor]:
    """Divide each entry by its batch maximum (``modality``) or all entries by their common maximum (``joint``).
    Only the joint scope keeps the audio-versus-visual comparison CSGM exists for: with per-modality maxima both
    modalities span [0, 1] whatever their alignment."""
    if scope == "modality":
        return {k: batch_normalise(v) for k, v in values.items()}
    if scope != "joint":
        raise ValueError(f"CSGM normalisation must be one of {NORMALISE}, got {scope!r}")
    top = torch.stack([v.max() for v in values.values()]).max().clamp(min=1e-12)
    return {k: v / top for k, v in values.items()}


def convergence_rates(theta: dict[str, torch.Tensor], theta_neg: dict[str, torch.Tensor],
                      normalise: str = "modality") -> dict[str, torch.Tensor]:
    """V_c per modality from the projected embeddings of positives (θ) and negatives (θ⁻), Eq. 6; each δ normalised
    over the batch within its modality or jointly over both modalities (``normalise``)."""
    w, w_n = theta["w"], theta_neg["w"]
    d1 = {m: violation(theta[m], w, theta_neg[m]) for m in ("a", "v")}  # anchor m+, positive w+, negative m−
    d2 = {m: violation(w, theta[m], w_n) for m in ("a", "v")}  # anchor w+, positive m+, negative w−
    n1, n2 = normalise_rates(d1, normalise), normalise_rates(d2, normalise)
    return {m: n1[m] * n2[m] for m in ("a", "v")}


def contribution(v_c: torch.Tensor, v_o: torch.Tensor | None, gamma: float,
                 v_o_normalised: bool = False) -> torch.Tensor:
    """η = max(V̂_c · V̂_o, γ) (Eq. 5); V_o is divided by its batch maximum unless ``v_o_normalised`` says that was
    done already (e.g. jointly over both modalities); with ``v_o=None`` the convergence rate alone (Table II's V_c-only
    variant)."""
    if v_o is None:
        return v_c.clamp(min=gamma)
    return (v_c * (v_o if v_o_normalised else batch_normalise(v_o))).clamp(min=gamma)


def regulate(rates: dict[str, torch.Tensor], rho: float, scope: str) -> dict[str, torch.Tensor]:
    """The ``w_owner="csgm"`` reading of "normalized under the regulation of weight parameter ρ": each rate relative
    to ρ times the batch mean (over both modalities for the joint scope), capped at 1. Max-normalised products of
    several rates crowd near 0 (most samples would sit at the floor γ); relative to the mean they spread around
    1/ρ, and ρ > 1 lets fewer samples reach the full contribution."""
    if scope == "joint":
        mean = torch.cat([r.flatten() for r in rates.values()]).mean()
        means = {g: mean for g in rates}
    else:
        means = {g: r.mean() for g, r in rates.items()}
    return {g: (r / (rho * means[g]).clamp(min=1e-12)).clamp(max=1.0) for g, r in rates.items()}


@dataclass
class Modulation:
    """What :func:`modulate` did, per ghost group: η per sample, the factor its parameter step is to be scaled by
    after the optimiser step (1 when η went into the gradient), and the gradient norms before and after."""
    eta: dict[str, torch.Tensor]
    step_scale: dict[str, torch.Tensor]
    grad_norm_before: dict[str, torch.Tensor]
    grad_norm_after: dict[str, torch.Tensor]


@torch.no_grad()
def modulate(ghost: GhostGrads, groups: dict[str, str], v_c: dict[str, torch.Tensor], gamma: float,
             use_optimisation_rate: bool, noise: float, generator: torch.Generator | None = None,
             normalise: str = "modality", update: str = "replace_gradient", rho: float | None = None) -> Modulation:
    """Set the gradients of every QDMA part from the per-sample contributions η_i (Eq. 8). ``groups`` maps a ghost
    group ('a_attention', ...) to its modality ('a' or 'v'); V_o is normalised within the group (``modality``) or
    jointly with the same part of the other modality (``joint``).

    ``update="replace_gradient"``: the gradient becomes Σ_i η_i G_i + ε, Eq. 8 read as written; an adaptive optimiser
    (Adam, §III.A) then divides out any factor shared by the whole part, so only η's variation across samples acts.
    ``update="scale_step"``: the gradient is Σ_i (η_i / η̄) G_i + ε / η̄ and the part's parameter step is scaled by
    η̄ = mean_i η_i afterwards (:func:`scale_steps`), so that a part whose samples all get half the contribution moves
    half as far, under any optimiser; with plain SGD both options give the same update."""
    if update not in UPDATES:
        raise ValueError(f"CSGM update must be one of {UPDATES}, got {update!r}")
    v_o = None
    if use_optimisation_rate:
        raw = {}
        for group in groups:
            norm = sum(p.detach().pow(2).sum() for p in ghost.params(group)).clamp(min=1e-12)
            raw[group] = ghost.sq_norms(group) / norm
        v_o = {}
        for part in {g.split("_", 1)[1] for g in groups}:
            members = {g: raw[g] for g in groups if g.split("_", 1)[1] == part}
            v_o.update(normalise_rates(members, normalise))
    rates = {g: v_c[m] if v_o is None else v_c[m] * v_o[g] for g, m in groups.items()}
    if rho is not None:
        rates = regulate(rates, rho, normalise)
    out = Modulation({}, {}, {}, {})
    for group in groups:
        eta = rates[group].clamp(min=gamma)  # Eq. 5
        mean = eta.mean() if update == "scale_step" else eta.new_ones(())
        weights = eta
        if noise > 0:
            z = torch.randn(eta.shape, device=eta.device, dtype=eta.dtype, generator=generator)
            weights = eta * (1 + noise * (z - z.mean()))
        before = after = 0.0
        plain = ghost.weighted_grads(group, torch.ones_like(eta))
        for p, g in ghost.weighted_grads(group, weights / mean).items():
            p.grad = g.to(p.dtype)
            after = after + g.pow(2).sum()
            before = before + plain[p].pow(2).sum()
        out.eta[group], out.step_scale[group] = eta, mean
        out.grad_norm_before[group], out.grad_norm_after[group] = before ** 0.5, after ** 0.5
    return out


@contextlib.contextmanager
def scale_steps(ghost: GhostGrads, step_scale: dict[str, torch.Tensor]) -> Iterator[None]:
    """Around an optimiser step: each group's parameter change is multiplied by its ``step_scale``."""
    scaled = {g: s for g, s in step_scale.items() if float(s) != 1.0}
    before = {p: p.detach().clone() for g in scaled for p in ghost.params(g)}
    yield
    with torch.no_grad():
        for g, s in scaled.items():
            for p in ghost.params(g):
                p.copy_(before[p] + s.to(p.dtype) * (p - before[p]))


def csgm_statistics(mod: Modulation, groups: dict[str, str], gamma: float) -> dict[str, torch.Tensor]:
    """Per group: η's batch mean and spread, the share of samples at the floor γ, and the factor the group's
    parameter step was scaled by (η̄ under ``scale_step``, 1 under ``replace_gradient``); per modality: the QDMA
    gradient norm before and after modulation. Averaged over an epoch's batches, these are the epoch's figures (the
    batches are of equal size)."""
    stats = {}
    for group, eta in mod.eta.items():
        stats[f"eta_mean.{group}"] = eta.mean()
        stats[f"eta_std.{group}"] = eta.std() if eta.numel() > 1 else eta.new_zeros(())
        # η = max(rate, γ) is exactly γ at the floor; the tolerance only absorbs a float32 γ against a float one
        stats[f"eta_floor.{group}"] = (eta <= gamma * (1 + 1e-6)).to(eta.dtype).mean()
        stats[f"step_scale.{group}"] = torch.as_tensor(mod.step_scale[group], dtype=eta.dtype)
    for modality in sorted(set(groups.values())):
        members = [g for g, m in groups.items() if m == modality]
        stats[f"grad_before.{modality}"] = sum(mod.grad_norm_before[g] ** 2 for g in members) ** 0.5
        stats[f"grad_after.{modality}"] = sum(mod.grad_norm_after[g] ** 2 for g in members) ** 0.5
    return stats
