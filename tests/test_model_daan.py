"""DAAN: QDMA, the TCN bypass, CSGM against a slow per-sample reference, the noise covariance, overfitting."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from helpers import first_and_last_loss

from training.data.batch import Batch
from training.models import MODELS, InputDims, build_model
from training.models.csgm import (
    GhostGrads,
    contribution,
    convergence_rates,
    current_packed_rows,
    modulate,
    normalise_rates,
    regulate,
    scale_steps,
)
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
    base = rows["Base (MLP + cross-attention)"]
    assert base.needs_sequences and not base.use_qdma and base.csgm == "none"  # same input, pooled in the model
    assert rows["Base + QDMA"].csgm == "none" and rows["Base + QDMA"].needs_sequences
    assert rows["Base + QDMA + CSGM (V_c only)"].csgm == "convergence"
    assert rows["DAAN"].csgm == "full" and rows["DAAN"].family == "Audio-visual"


def test_ghost_refuses_unsupported_modules():
    with pytest.raises(TypeError, match="not supported"):
        GhostGrads({"x": [torch.nn.Conv1d(2, 2, 2)]})


# ----------------------------------------------------------------------------------------------- CSGM options
def _audio_dominant_rates(scale: float = 0.1):
    """Embeddings where audio is already aligned with the text: its violations are `scale` times video's."""
    g = torch.Generator().manual_seed(3)
    w, w_n = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    v, v_n = w + 2.0 * torch.randn(32, 8, generator=g), w + 0.3 * torch.randn(32, 8, generator=g)
    theta = {"w": w, "v": v, "a": w + scale * (v - w)}
    theta_neg = {"w": w_n, "v": v_n, "a": w + scale * (v_n - w)}
    return theta, theta_neg


def test_joint_normalisation_keeps_the_audio_versus_visual_comparison():
    theta, theta_neg = _audio_dominant_rates(0.5)
    joint = convergence_rates(theta, theta_neg, "joint")
    assert float(joint["a"].mean()) < 0.1 * float(joint["v"].mean())
    # audio's violations a tenth of video's: within each modality the batch maximum rescales audio's onto video's,
    # and the comparison is gone; over both modalities it stays
    video = torch.rand(16, generator=torch.Generator().manual_seed(0))
    alone = normalise_rates({"a": 0.1 * video, "v": video}, "modality")
    torch.testing.assert_close(alone["a"], alone["v"])
    joint = normalise_rates({"a": 0.1 * video, "v": video}, "joint")
    torch.testing.assert_close(joint["a"], 0.1 * joint["v"])


@pytest.mark.parametrize("normalise", ["joint", "modality"])
@pytest.mark.parametrize("update", ["scale_step", "replace_gradient"])
def test_the_dominant_modality_gets_the_smaller_eta_under_each_update_option(update, normalise):
    batch, _ = _with_negatives()
    model = _model("daan")
    with model.ghost.capture(batch.size):
        model._loss(batch)[0].backward()
    theta, theta_neg = _audio_dominant_rates()
    n = batch.size
    v_c = {m: r[:n] for m, r in convergence_rates(theta, theta_neg, normalise).items()}
    groups = {g: g[0] for g in model.ghost.groups}
    mod = modulate(model.ghost, groups, v_c, 0.05, use_optimisation_rate=False, noise=0.0, normalise=normalise,
                   update=update)
    for part in ("attention", "tcn"):
        assert float(mod.eta[f"a_{part}"].mean()) < float(mod.eta[f"v_{part}"].mean())
        if update == "scale_step":
            assert float(mod.step_scale[f"a_{part}"]) < float(mod.step_scale[f"v_{part}"])


def _one_adam_step_change(update: str, eta: float, group: str = "a_tcn") -> torch.Tensor:
    batch, _ = _with_negatives()
    model = _model("daan", seed=1)
    opt = model.configure_optimizers(1e-3, 0.0)[0]
    opt.zero_grad(set_to_none=True)
    with model.ghost.capture(batch.size):
        model._loss(batch)[0].backward()
    groups = {g: g[0] for g in model.ghost.groups}
    v_c = {m: torch.full((batch.size,), eta) for m in ("a", "v")}
    mod = modulate(model.ghost, groups, v_c, 0.0, use_optimisation_rate=False, noise=0.0, update=update)
    param = model.ghost.params(group)[0]
    before = param.detach().clone()
    with scale_steps(model.ghost, mod.step_scale):
        opt.step()
    return param.detach() - before


def test_under_adam_step_scaling_halves_the_step_and_gradient_replacement_does_not():
    """Why the step-scaling option exists: Adam divides a gradient by its own running magnitude, so a factor shared by
    a whole part (η = 0.5 for every sample) cancels when it only scales the gradient."""
    full, half = _one_adam_step_change("scale_step", 1.0), _one_adam_step_change("scale_step", 0.5)
    torch.testing.assert_close(half, 0.5 * full, atol=1e-7, rtol=1e-4)
    full, half = _one_adam_step_change("replace_gradient", 1.0), _one_adam_step_change("replace_gradient", 0.5)
    torch.testing.assert_close(half, full, atol=1e-6, rtol=1e-3)  # the same step: η had no effect


def test_training_logs_what_csgm_does(tiny_dataset, tmp_path):
    """Per epoch: η's mean and spread per modality and part, the share of samples at the floor γ, the factor each
    part's step was scaled by, and the QDMA gradient norms before and after."""
    import json

    import training.engine as engine
    from training.config import RunConfig, TrainConfig, resolve_hparams

    hp = resolve_hparams("daan", "demo")
    cfg = RunConfig(model="daan", seed=0, train=TrainConfig.from_dict({**hp["train"], "epochs": 2, "n_batches": 3,
                                                                      "batch_size": 8}),
                    model_params={**hp["model"], **SMALL}, features=str(tiny_dataset["features"]),
                    splits=str(tiny_dataset["splits"]), text=str(tiny_dataset["text"]), device="cpu")
    engine.train_stage(cfg, 1, tmp_path / "run", progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for r in records:
        stats = r["stats"]
        for part in ("a_attention", "a_tcn", "v_attention", "v_tcn"):
            assert cfg.model_params["gamma"] <= stats[f"eta_mean.{part}"] <= 1.0
            assert stats[f"eta_std.{part}"] >= 0.0
            assert 0.0 <= stats[f"eta_floor.{part}"] <= 1.0
            assert stats[f"step_scale.{part}"] == pytest.approx(stats[f"eta_mean.{part}"], abs=1e-6)  # scale_step
        for m in ("a", "v"):
            assert stats[f"grad_before.{m}"] > 0 and stats[f"grad_after.{m}"] > 0


def test_base_reads_the_same_per_step_input_pooled_inside_the_model():
    batch, _ = _batch()
    model = _model("daan_base")
    model.eval()
    assert type(model).needs_sequences
    pooled = batch.audio_seq.masked_fill(batch.audio_pad.unsqueeze(-1), 0).sum(1) / (~batch.audio_pad).sum(1,
                                                                                                           keepdim=True)
    with torch.no_grad():
        expected = model.enc_a(pooled)
        phi_a, _ = model.encode(batch)
    torch.testing.assert_close(phi_a, expected)


def _cross_model():
    torch.manual_seed(0)
    return build_model("daan_qdma", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "qdma_attention": "cross"}).eval()


def test_cross_modal_qdma_attends_from_one_modality_over_the_others_valid_steps():
    """Mask test: the audio embedding depends on the video's valid steps, never on its padded ones; self-attention's
    audio embedding does not depend on the video at all."""
    batch, _ = _batch()
    model = _cross_model()
    with torch.no_grad():
        phi_a, _ = model.encode(batch)
        padded = batch.video_seq.masked_fill(batch.video_pad.unsqueeze(-1), 0) + \
            batch.video_pad.unsqueeze(-1) * 100.0
        phi_a_pad, _ = model.encode(replace(batch, video_seq=padded))
        phi_a_valid, _ = model.encode(replace(batch, video_seq=batch.video_seq + 1.0))
    torch.testing.assert_close(phi_a_pad, phi_a)
    assert (phi_a_valid - phi_a).abs().max() > 1e-3
    self_model = _model("daan_qdma").eval()
    with torch.no_grad():
        a, _ = self_model.encode(batch)
        b, _ = self_model.encode(replace(batch, video_seq=batch.video_seq + 1.0))
    torch.testing.assert_close(a, b)


def test_cross_modal_qdma_is_invariant_to_the_order_of_the_attended_steps():
    """Permutation test: reordering the video's valid steps changes what the audio attends in which order, not what
    each audio step receives (the attention has no positions), so the audio embedding is unchanged."""
    batch, _ = _batch()
    model = _cross_model()
    lengths = (~batch.video_pad).sum(1)
    perm = torch.stack([torch.cat([torch.randperm(int(n), generator=torch.Generator().manual_seed(i)),
                                   torch.arange(int(n), batch.video_seq.shape[1])]) for i, n in enumerate(lengths)])
    shuffled = torch.gather(batch.video_seq, 1, perm.unsqueeze(-1).expand_as(batch.video_seq))
    with torch.no_grad():
        phi_a, _ = model.encode(batch)
        phi_a_perm, _ = model.encode(replace(batch, video_seq=shuffled))
    torch.testing.assert_close(phi_a_perm, phi_a, atol=1e-5, rtol=1e-4)


def test_csgm_modulates_cross_modal_qdma():
    """In the cross-modal reading a QDMA part's keys and values read the other modality's steps; CSGM still splits
    its gradient into per-sample contributions that add up to the ordinary batch gradient."""
    batch, _ = _with_negatives()
    torch.manual_seed(0)
    model = build_model("daan", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "noise": 0.0,
                                                        "qdma_attention": "cross"})
    model.zero_grad(set_to_none=True)
    model._loss(batch)[0].backward()
    plain = {p: p.grad.clone() for g in model.ghost.groups for p in model.ghost.params(g)}
    model.zero_grad(set_to_none=True)
    with model.ghost.capture(batch.size):
        model._loss(batch)[0].backward()
    for group in model.ghost.groups:
        for p, g in model.ghost.weighted_grads(group, torch.ones(batch.size)).items():
            torch.testing.assert_close(g, plain[p], atol=1e-5, rtol=1e-4)
    logs = model.train_step(batch, model.configure_optimizers(1e-3, 0.0))
    assert model.hp["gamma"] <= float(logs["eta_a"]) <= 1.0


def test_w_as_csgm_weight_learns_the_attention_weight_and_spreads_the_rates():
    batch, _ = _with_negatives()
    torch.manual_seed(0)
    model = build_model("daan", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "noise": 0.0, "w_owner": "csgm",
                                                        "diff_weight": 1.15, "lambda_init": 0.2, "gamma": 0.0})
    lam = model.enc_a.attention.weight
    assert isinstance(lam, torch.nn.Parameter) and float(lam.detach()) == pytest.approx(0.2)
    assert model.enc_a.refine.scale == pytest.approx(0.8)  # (1 − λ_init), as the Differential Transformer
    opt = model.configure_optimizers(1e-2, 0.0)
    logs = model.train_step(batch, opt)
    assert float(lam.detach()) != pytest.approx(0.2)  # learnt
    # relative to ρ times the batch mean, the rates spread below and up to 1 instead of crowding at 0
    rates = regulate({"a": torch.tensor([0.0, 1e-4, 1e-3, 1e-2]), "v": torch.tensor([1e-3, 2e-3, 3e-3, 4e-3])},
                     1.15, "joint")
    mean = float(torch.cat([torch.tensor([0.0, 1e-4, 1e-3, 1e-2]), torch.tensor([1e-3, 2e-3, 3e-3, 4e-3])]).mean())
    torch.testing.assert_close(rates["v"], (torch.tensor([1e-3, 2e-3, 3e-3, 4e-3]) / (1.15 * mean)).clamp(max=1))
    assert float(rates["a"].max()) == 1.0
    assert 0.0 <= float(logs["eta_a"]) <= 1.0


def test_the_comparison_models_open_readings_are_named_options():
    from training.models.coordgen import kept_dimensions

    assert kept_dimensions(100, 0.1, "masked") == 90 and kept_dimensions(100, 0.1, "kept") == 10
    with pytest.raises(ValueError, match="masked_proportion_reading"):
        kept_dimensions(100, 0.1, "other")
    torch.manual_seed(0)
    code = build_model("sacma", InputDims(12, 12, 10), {"loss_weights": "code"})
    paper = build_model("sacma", InputDims(12, 12, 10), {"loss_weights": "paper"})
    assert code.ccl_weights["a_w"] == code.ccl_weights["v_w"] == 0.1
    assert paper.ccl_weights["a_w"] == paper.ccl_weights["v_w"] == 0.8 and paper.ccl_weights["o_w"] == 1.0
