"""DAAN: QDMA, the TCN bypass, CSGM against a slow per-sample reference, the noise covariance, overfitting."""

import pytest
import torch
import torch.nn.functional as F
from helpers import first_and_last_loss

from training.data.features import Batch
from training.models import MODELS, InputDims, build_model
from training.models.csgm import GhostGrads, contribution, convergence_rates, current_packed_rows, modulate
from training.models.qdma import DiffAttention, TemporalBypass

SMALL = {"hidden_dim": 16, "out_dim": 8, "qk_dim": 8, "qdma_heads": 2, "attn_heads": 2, "attn_mlp_dim": 16,
         "mlp_hidden": 16, "tcn_layers": 2, "dilation": 2}
NO_DROPOUT = {"qdma_dropout": 0.0, "attn_dropout": 0.0, "proj_dropout": 0.0, "dec_dropout": 0.0}


def _batch(b=6, t=5, seed=0, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(b) % n_classes
    centres = torch.randn(n_classes, 2, 12, generator=g)
    text = F.normalize(torch.randn(n_classes, 10, generator=g), dim=1)
    lengths = torch.tensor([t, t - 2, 1, t, t - 1, t, 2, t][:b])
    pad = torch.arange(t)[None, :] >= lengths[:, None]
    a = centres[label, 0][:, None] + 0.3 * torch.randn(b, t, 12, generator=g)
    v = centres[label, 1][:, None] + 0.3 * torch.randn(b, t, 12, generator=g)
    a, v = a.masked_fill(pad[..., None], 0), v.masked_fill(pad[..., None], 0)
    valid = (~pad).unsqueeze(-1).float()

    def mean(x):
        return (x * valid).sum(1) / valid.sum(1)
    return Batch(audio=mean(a), video=mean(v), label=label, text=text[label], audio_seq=a, audio_pad=pad,
                 video_seq=v, video_pad=pad.clone()), text


def _with_negatives(b=6, t=5, seed=0):
    pos, text = _batch(b, t, seed)
    perm = torch.tensor([1, 2, 0, 4, 5, 3][:b])
    neg = Batch(**{k: getattr(pos, k)[perm] for k in ("audio", "video", "label", "text", "audio_seq", "audio_pad",
                                                       "video_seq", "video_pad")})
    pos.neg = neg
    return pos, text


# ----------------------------------------------------------------------------------------------- QDMA
def test_zero_weight_is_ordinary_softmax_attention():
    torch.manual_seed(0)
    att = DiffAttention(d_in=8, qk_dim=6, value_dim=8, heads=2, weight=0.0)
    x = torch.randn(3, 5, 8)
    valid = torch.ones(3, 5, dtype=torch.bool)
    out = att(x, valid)
    q = att.w_q(x[..., :4]).reshape(3, 5, 2, 3).transpose(1, 2)
    k = att.w_k(x[..., :4]).reshape(3, 5, 2, 3).transpose(1, 2)
    v = att.w_v(x).reshape(3, 5, 2, 4).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 3 ** 0.5, -1) @ v
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(3, 5, 8))


def test_differential_attention_subtracts_the_weighted_second_map():
    torch.manual_seed(0)
    att = DiffAttention(d_in=8, qk_dim=4, value_dim=4, heads=1, weight=0.7)
    x, valid = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)
    a1, a2 = att.maps(x, valid)
    torch.testing.assert_close(att(x, valid), ((a1 - 0.7 * a2) @ att.w_v(x)[:, None]).squeeze(1))


def test_padded_steps_get_no_attention_and_do_not_change_valid_outputs():
    torch.manual_seed(0)
    att = DiffAttention(d_in=8, qk_dim=4, value_dim=8, heads=2, weight=0.5)
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    a1, a2 = att.maps(x, valid)
    assert (a1[0, :, :, 4:] == 0).all() and (a2[0, :, :, 4:] == 0).all()
    changed = x.clone()
    changed[0, 4:] = 100.0
    torch.testing.assert_close(att(changed, valid)[0, :4], att(x, valid)[0, :4])


def test_qdma_output_ignores_padding():
    torch.manual_seed(0)
    model = build_model("daan", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT}).eval()
    b, _ = _batch()
    noisy = Batch(**{**b.__dict__, "audio_seq": b.audio_seq.masked_fill(b.audio_pad[..., None], 50.0)})
    torch.testing.assert_close(model.enc_a(noisy.audio_seq, noisy.audio_pad), model.enc_a(b.audio_seq, b.audio_pad))


# ----------------------------------------------------------------------------------------------- TCN
@pytest.mark.parametrize("layers,dilation,kernel", [(2, 3, 2), (3, 2, 2), (2, 2, 3), (0, 1, 2), (5, 5, 2)])
def test_tcn_is_causal_and_its_receptive_field_matches_k_and_n(layers, dilation, kernel):
    torch.manual_seed(0)
    tcn = TemporalBypass(d_in=4, channels=6, layers=layers, dilation=dilation, kernel=kernel)
    t = 40
    x = torch.randn(1, t, 4)
    full = tcn.forward_all(x)
    for cut in (5, 11):
        changed = x.clone()
        changed[:, cut + 1:] = torch.randn(1, t - cut - 1, 4)
        torch.testing.assert_close(tcn.forward_all(changed)[:, :cut + 1], full[:, :cut + 1])
    # the output at the last step depends on exactly the last `receptive_field` steps
    xg = x.clone().requires_grad_(True)
    tcn.forward_all(xg)[0, -1].sum().backward()
    touched = (xg.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    rf = dilation + layers * (kernel - 1) * dilation  # the causal convolution spans k steps: no holes
    assert tcn.receptive_field == rf
    assert touched.tolist() == list(range(t - rf, t))


def test_a_two_tap_causal_convolution_would_leave_holes():
    """Why the causal convolution spans k steps: with two taps and dilation 3 every third step is skipped."""
    torch.manual_seed(0)
    tcn = TemporalBypass(d_in=4, channels=16, layers=2, dilation=3, kernel=2, causal_kernel=2)
    x = torch.randn(1, 12, 4, requires_grad=True)
    tcn.forward_all(x)[0, -1].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert touched == sorted(11 - j - 3 * m for j in (0, 1) for m in (0, 1, 2))


def test_tcn_last_step_shortcut_equals_the_full_computation():
    torch.manual_seed(0)
    tcn = TemporalBypass(d_in=4, channels=4, layers=3, dilation=2, kernel=2)
    x = torch.randn(4, 9, 4)
    lengths = torch.tensor([9, 5, 1, 3])
    full = tcn.forward_all(x)
    torch.testing.assert_close(tcn(x, lengths), full[torch.arange(4), lengths - 1])


# ----------------------------------------------------------------------------------------------- CSGM
def test_contribution_rates_are_never_below_gamma():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v_c, v_o = torch.rand(64, generator=g) ** 3, torch.rand(64, generator=g) * 10
        for gamma in (0.0, 0.45, 0.6):
            eta = contribution(v_c, v_o, gamma)
            assert (eta >= gamma).all() and (eta <= max(1.0, gamma)).all()
    assert torch.equal(contribution(torch.zeros(4), torch.zeros(4), 0.5), torch.full((4,), 0.5))


def test_convergence_rate_is_zero_for_well_separated_samples():
    theta = {"a": torch.zeros(2, 3), "v": torch.zeros(2, 3), "w": torch.zeros(2, 3)}
    far = {"a": torch.full((2, 3), 5.0), "v": torch.full((2, 3), 5.0), "w": torch.full((2, 3), 5.0)}
    assert all((r == 0).all() for r in convergence_rates(theta, far).values())


def _model(csgm_class="daan", seed=0):
    torch.manual_seed(seed)
    return build_model(csgm_class, InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "noise": 0.0})


def _part_modules(model):
    return {f"{m}_{p}": mods for m, enc in (("a", model.enc_a), ("v", model.enc_v)) for p, mods in enc.parts().items()}


def _slow_per_sample_gradients(model, batch):
    """G_i for every part, one forward/backward per sample: in every part module, only sample i's rows (positive i and
    negative i, or their steps in a packed call) use the live parameters; the other rows use a detached copy. Outputs and input gradients are
    unchanged, so G_i is exactly the gradient that reaches the parameters through sample i's own activations."""
    b = batch.size
    groups = _part_modules(model)
    per_sample = {g: [] for g in groups}
    for i in range(b):
        rows = torch.zeros(2 * b, dtype=torch.bool)
        rows[i] = rows[b + i] = True
        handles = []
        for mods in groups.values():
            for mod in mods:
                def only_i(module, inputs, out, rows=rows):
                    x = inputs[0]
                    if isinstance(module, torch.nn.Linear):
                        frozen = F.linear(x, module.weight.detach(),
                                          None if module.bias is None else module.bias.detach())
                    else:
                        frozen = x * module.weight.detach() + module.bias.detach()
                    packed = current_packed_rows()
                    keep = rows[packed.seq] if packed is not None else rows if out.shape[0] == 2 * b else rows[:b]
                    return torch.where(keep.view((-1,) + (1,) * (out.dim() - 1)), out, frozen)
                handles.append(mod.register_forward_hook(only_i))
        model.zero_grad(set_to_none=True)
        loss, _, (theta, theta_neg) = model._loss(batch)
        loss.backward()
        for h in handles:
            h.remove()
        for g in groups:
            per_sample[g].append({p: p.grad.clone() for p in _params(groups[g])})
    return per_sample, convergence_rates(theta, theta_neg)


def _params(mods):
    return [p for m in mods for p in (m.weight, getattr(m, "bias", None)) if p is not None]


@pytest.mark.parametrize("variant", ["daan", "daan_qdma_csgm_vc"])
def test_fast_csgm_matches_a_slow_per_sample_reference(variant):
    batch, _ = _with_negatives()
    model = _model(variant)
    gamma = model.hp["gamma"]
    per_sample, v_c = _slow_per_sample_gradients(model, batch)
    expected = {}
    for g, samples in per_sample.items():
        params = list(samples[0])
        eta = []
        for i, grads in enumerate(samples):
            if variant == "daan":
                sq = sum(grads[p].pow(2).sum() for p in params)
                eta.append((v_c[g[0]][i], sq / sum(p.detach().pow(2).sum() for p in params)))
            else:
                eta.append((v_c[g[0]][i], None))
        if variant == "daan":
            v_o = torch.stack([e[1] for e in eta])
            etas = torch.clamp(torch.stack([e[0] for e in eta]) * v_o / v_o.max(), min=gamma)
        else:
            etas = torch.clamp(torch.stack([e[0] for e in eta]), min=gamma)
        for p in params:
            expected[p] = sum(etas[i] * samples[i][p] for i in range(len(samples)))

    # the ordinary batch gradient: the per-sample contributions add up to it
    model.zero_grad(set_to_none=True)
    model._loss(batch)[0].backward()
    plain = {p: p.grad.clone() for mods in _part_modules(model).values() for p in _params(mods)}
    for samples in per_sample.values():
        for p in samples[0]:
            torch.testing.assert_close(sum(s[p] for s in samples), plain[p], atol=1e-5, rtol=1e-4)
    # the fast path: one forward/backward that records activations and output gradients (and accumulates no
    # gradient for the modulated parts), then the vectorised modulation
    model.zero_grad(set_to_none=True)
    with model.ghost.capture(batch.size):
        loss, _, (theta, theta_neg) = model._loss(batch)
        loss.backward()
    assert all(p.grad is None for p in plain)
    for group in model.ghost.groups:
        for p, g in model.ghost.weighted_grads(group, torch.ones(batch.size)).items():
            torch.testing.assert_close(g, plain[p], atol=1e-5, rtol=1e-4)
    groups = {g: g[0] for g in model.ghost.groups}
    modulate(model.ghost, groups, convergence_rates(theta, theta_neg), gamma,
             use_optimisation_rate=variant == "daan", noise=0.0)
    worst = max(float((p.grad - expected[p]).abs().max()) for p in expected)
    assert worst <= 1e-5, worst
    # and an optimiser step applies exactly that update
    before = {p: p.detach().clone() for p in expected}
    torch.optim.SGD([p for p in expected], lr=1.0).step()
    assert max(float(((before[p] - p.detach()) - expected[p]).abs().max()) for p in expected) <= 1e-5


def test_noise_has_the_covariance_of_the_modulated_per_sample_contributions():
    batch, _ = _with_negatives()
    model = _model("daan")
    with model.ghost.capture(batch.size):
        loss, _, (theta, theta_neg) = model._loss(batch)
        loss.backward()
    group = "a_tcn"
    eta = torch.linspace(0.5, 1.0, batch.size)
    ghost = model.ghost
    param = ghost.params(group)[0]
    # explicit per-sample contributions G_i of this parameter (one-hot weights)
    g_i = torch.stack([ghost.weighted_grads(group, F.one_hot(torch.tensor(i), batch.size).float())[param]
                       for i in range(batch.size)]).flatten(1)
    contrib = eta[:, None] * g_i
    centred = contrib - contrib.mean(0)
    cov = centred.T @ centred  # Σ_η
    mean_grad = ghost.weighted_grads(group, eta)[param].flatten()
    gen = torch.Generator().manual_seed(123)
    draws = []
    for _ in range(4000):
        z = torch.randn(batch.size, generator=gen)
        draws.append(ghost.weighted_grads(group, eta * (1 + (z - z.mean())))[param].flatten() - mean_grad)
    eps = torch.stack(draws)
    assert eps.mean(0).abs().max() < 4 * (torch.diagonal(cov).sqrt().max() / 4000 ** 0.5)
    directions = F.normalize(torch.randn(5, eps.shape[1], generator=torch.Generator().manual_seed(7)), dim=1)
    for u in directions:
        expected = float(u @ cov @ u)
        observed = float((eps @ u).var())
        assert observed == pytest.approx(expected, rel=0.1)
    assert float(eps.pow(2).sum(1).mean()) == pytest.approx(float(torch.trace(cov)), rel=0.1)


def test_csgm_update_differs_from_the_plain_gradient():
    batch, _ = _with_negatives()
    model = _model("daan")
    opt = model.configure_optimizers(1e-3, 0.0)
    logs = model.train_step(batch, opt)
    assert model.hp["gamma"] <= float(logs["eta_a"]) <= 1.0


# ----------------------------------------------------------------------------------------------- whole model
@pytest.mark.parametrize("name", ["daan", "daan_base", "daan_qdma", "daan_qdma_csgm_vc"])
def test_model_overfits_eight_samples(name):
    torch.manual_seed(0)
    pos, text = _batch(b=8, t=4, seed=1, n_classes=4)
    perm = (torch.arange(8) + 1) % 8
    pos.neg = Batch(**{k: getattr(pos, k)[perm] for k in ("audio", "video", "label", "text", "audio_seq",
                                                           "audio_pad", "video_seq", "video_pad")})
    model = build_model(name, InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "noise": 0.0})
    first, last = first_and_last_loss(model, lambda _: pos, 251, lr=3e-3)
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(pos.without_text()), model.embed_classes(text))["video"]
    assert last < 0.5 * first
    assert torch.equal(d.argmin(1), pos.label)


def test_ablation_variants_are_registered_like_table_ii():
    rows = {MODELS[n].display_name: MODELS[n] for n in ("daan_base", "daan_qdma", "daan_qdma_csgm_vc", "daan")}
    assert not rows["Base (MLP + cross-attention)"].needs_sequences
    assert rows["Base + QDMA"].csgm == "none" and rows["Base + QDMA"].needs_sequences
    assert rows["Base + QDMA + CSGM (V_c only)"].csgm == "convergence"
    assert rows["DAAN"].csgm == "full" and rows["DAAN"].family == "Audio-visual"


def test_evaluation_never_sees_text():
    batch, _ = _with_negatives()
    model = _model("daan").eval()
    out = model.embed_videos(batch.without_text())["video"]
    shuffled = Batch(**{**batch.__dict__, "text": batch.text.flip(0), "neg": None})
    torch.testing.assert_close(model.embed_videos(shuffled)["video"], out)


def test_ghost_refuses_unsupported_modules():
    with pytest.raises(TypeError, match="not supported"):
        GhostGrads({"x": [torch.nn.Conv1d(2, 2, 2)]})
