"""AVMST: the integrate-and-fire neuron, its surrogate gradient, the spiking gate, and training on a tiny batch."""

import pytest
import torch
from helpers import parameters_without_gradient, toy_batch

from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.avmst import SpikingBranch, integrate_and_fire, spike


def constant_train(value: float, steps: int = 10) -> list[int]:
    return integrate_and_fire(torch.full((steps, 1), value)).squeeze(1).int().tolist()


def test_integrate_and_fire_spike_trains_by_hand():
    # 0.4 per step: v = 0.4, 0.8, 1.2 -> spike, reset to 0, and again: a spike every third step
    assert constant_train(0.4) == [0, 0, 1, 0, 0, 1, 0, 0, 1, 0]
    # reaching the threshold exactly fires (H(0) = 1)
    assert constant_train(0.5) == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    # hard reset to 0: after the spike at 1.4 the membrane restarts from 0, not from 0.4 (soft reset would give
    # 0,1,1,0,1,1,0,1,1,...)
    assert constant_train(0.7) == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert constant_train(1.0) == [1] * 10
    assert constant_train(-0.3) == [0] * 10


def test_neurons_are_independent_and_state_follows_the_input():
    current = torch.tensor([[0.6, 2.0], [0.6, -5.0], [0.0, 0.5], [0.6, 0.5]])
    # neuron 0: 0.6, 1.2 (spike, reset), 0.0, 0.6; neuron 1: 2.0 (spike, reset), -5, -4.5, -4.0
    assert integrate_and_fire(current).tolist() == [[0, 1], [1, 0], [0, 0], [0, 0]]


def test_surrogate_gradient_is_the_sigmoid_derivative():
    x = torch.tensor([0.0, 0.5, -1.0], requires_grad=True)
    out = spike(x, alpha=4.0)
    assert out.tolist() == [1.0, 1.0, 0.0]
    out.sum().backward()
    s = torch.sigmoid(4 * x.detach())
    torch.testing.assert_close(x.grad, 4 * s * (1 - s))
    assert x.grad[0].item() == pytest.approx(1.0)  # alpha/4 at the threshold


def test_spiking_branch_rate_and_gradient():
    torch.manual_seed(0)
    branch = SpikingBranch(d_in=16, hidden=32, d_out=20, steps=10, threshold=1.0, alpha=4.0)
    rate = branch(torch.randn(5, 16) * 3)
    assert rate.shape == (5, 20)
    assert ((rate >= 0) & (rate <= 1)).all()
    torch.testing.assert_close(rate * 10, (rate * 10).round())  # rates are multiples of 1/T
    rate.sum().backward()
    assert branch.fc1.weight.grad.abs().sum() > 0 and branch.fc2.weight.grad.abs().sum() > 0


DIMS = InputDims(audio=16, video=12, text=10)  # audio and video widths differ: each needs its own spiking branch
NO_DROPOUT = {"enc_dropout": 0.0, "proj_dropout": 0.0, "dec_dropout": 0.0}


def test_gating_shapes_and_modalities_use_their_own_branch():
    torch.manual_seed(0)
    model = build_model("avmst", DIMS, NO_DROPOUT).eval()
    audio, video = torch.randn(6, DIMS.audio), torch.randn(6, DIMS.video)
    rate_a, rate_v = model.A_snn(audio), model.V_snn(video)
    assert rate_a.shape == rate_v.shape == (6, 300)
    phi_a, phi_v = model.gate(model.A_enc(audio), model.V_enc(video), rate_a, rate_v)
    assert phi_a.shape == phi_v.shape == (6, 300)
    # the gate is the audio pair's token 0 and the video pair's token 1 through the shared cross-attention
    pair_v = torch.stack([model.V_enc(video) + model.pos[1],
                          model.V_enc(video) * torch.softmax(rate_v, -1) + model.pos[1]], dim=1)
    torch.testing.assert_close(phi_v, model.cross(pair_v)[:, 1])
    outs = model.branches(audio, video)
    assert [tuple(o.shape) for o in outs] == [(6, 300), (6, 300), (6, 64), (6, 64)]


def test_frozen_spiking_layers_option():
    model = build_model("avmst", DIMS, {"train_snn": False})
    assert not any(p.requires_grad for p in model.A_snn.parameters())
    assert all(p.requires_grad for p in model.A_enc.parameters())


def tiny_batch(seed: int = 0) -> tuple[Batch, torch.Tensor]:
    return toy_batch(DIMS, seed)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("avmst", DIMS)
    batch, _ = tiny_batch()
    loss, _ = model.loss(batch)
    loss.backward()
    assert parameters_without_gradient(model) == []


def test_overfits_a_tiny_batch_and_trains_the_spiking_layers():
    torch.manual_seed(0)
    model = build_model("avmst", DIMS, {**NO_DROPOUT, "snn_hidden_dim": 64, "hidden_dim": 128})  # small: fast
    batch, text = tiny_batch()
    model.set_training_classes(torch.arange(4), text)
    opt = model.configure_optimizers(1e-3, 0.0)
    w0 = model.V_snn.fc1.weight.detach().clone()
    losses = [float(model.train_step(batch, opt)["loss"]) for _ in range(100)]
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.V_snn.fc1.weight, w0)
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["video"]
    assert torch.equal(d.argmin(1), batch.label)
