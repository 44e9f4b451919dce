"""Coordinate-and-Generalize: mutual distillation, gradient pseudo-labels, the score mixture, and training on a tiny
batch."""

import math

import pytest
import torch
from helpers import parameters_without_gradient, toy_batch

from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.coordgen import (
    kept_dimensions,
    mixture_log_prob,
    symmetric_kl,
    top_k_pseudo_labels,
)


def test_symmetric_kl_by_hand():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.510826
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.368064
    assert symmetric_kl(p.log(), q.log()).item() == pytest.approx(0.5 * (kl_pq + kl_qp), rel=1e-6)
    assert symmetric_kl(q.log(), p.log()).item() == pytest.approx(symmetric_kl(p.log(), q.log()).item())
    assert symmetric_kl(p.log(), p.log()).item() == 0.0


def test_symmetric_kl_is_a_batch_mean():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    lp, lq = logits.log_softmax(1), logits.flip(0).log_softmax(1)
    rows = torch.stack([symmetric_kl(lp[i:i + 1], lq[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(symmetric_kl(lp, lq), rows.mean())


def test_top_k_pseudo_labels_by_hand():
    grad = torch.tensor([[0.1, -3.0, 2.0, 0.5],
                         [5.0, 0.0, -1.0, 0.2]])
    # k = 2: the two largest |gradients| of each row, whatever their sign
    assert top_k_pseudo_labels(grad, 2).tolist() == [[0, 1, 1, 0], [1, 0, 1, 0]]
    assert top_k_pseudo_labels(grad, 4).tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_masked_proportion_counts_the_zeros():
    assert kept_dimensions(512, 0.1) == 461
    assert kept_dimensions(10, 0.2) == 8
    assert kept_dimensions(10, 0.0) == 10


def test_mixture_of_branch_scores():
    g = torch.Generator().manual_seed(0)
    lp_v, lp_a = torch.randn(3, 5, generator=g).log_softmax(1), torch.randn(3, 5, generator=g).log_softmax(1)
    torch.testing.assert_close(mixture_log_prob(lp_v, lp_a, 0.3).exp(), 0.3 * lp_v.exp() + 0.7 * lp_a.exp())


DIMS = InputDims(audio=20, video=12, text=10)
NO_DROPOUT = {"enc_dropout": 0.0, "proj_dropout": 0.0}


def tiny_batch(seed: int = 0) -> tuple[Batch, torch.Tensor]:
    """8 samples of 4 well-separated classes (ids 3, 5, 6, 9). Returns (batch, text of the 4 classes)."""
    return toy_batch(DIMS, seed, class_ids=(3, 5, 6, 9), negatives=False)


def test_mask_loss_follows_the_input_gradient_of_the_classification_loss():
    torch.manual_seed(0)
    model = build_model("coordgen", DIMS, {**NO_DROPOUT, "masked_proportion": 0.25}).eval()
    batch, text = tiny_batch()
    model.set_training_classes(torch.tensor([3, 5, 6, 9]), text)
    _, parts = model.loss(batch)
    # recompute L_CLS and its input gradient by hand (eval mode: deterministic forward)
    audio, video = batch.audio.clone().requires_grad_(True), batch.video.clone().requires_grad_(True)
    m_a, m_v, z_a, z_v = model.embed(audio, video)
    w = model.f_w(text)
    p = 0.5 * (z_v @ w.T).softmax(1) + 0.5 * (z_a @ w.T).softmax(1)
    y = torch.nn.functional.one_hot(torch.arange(4).repeat_interleave(2), 4).float()
    cls = -(y * p.log() + (1 - y) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(parts["cls"], cls)
    g_a, g_v = torch.autograd.grad(cls, (audio, video))
    expected = 0.5 * ((top_k_pseudo_labels(g_v, 9) - m_v).norm(dim=1).mean()  # 12 - 3 kept
                      + (top_k_pseudo_labels(g_a, 15) - m_a).norm(dim=1).mean())  # 20 - 5 kept
    torch.testing.assert_close(parts["mask"], expected)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("coordgen", DIMS, NO_DROPOUT)
    batch, text = tiny_batch()
    model.set_training_classes(torch.tensor([3, 5, 6, 9]), text)
    loss, parts = model.loss(batch)
    assert set(parts) == {"cls", "kd", "mask"}
    loss.backward()
    assert parameters_without_gradient(model) == []


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model("coordgen", DIMS, NO_DROPOUT)
    batch, text = tiny_batch()
    model.set_training_classes(torch.tensor([3, 5, 6, 9]), text)
    opt = model.configure_optimizers(1e-3, 0.0)
    losses = [float(model.train_step(batch, opt)["loss"]) for _ in range(150)]
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["video"]
    assert d.shape == (8, 4) and (d >= 0).all()  # -log p
    torch.testing.assert_close(torch.exp(-d).sum(1), torch.ones(8))  # p is a distribution over the candidates
    assert torch.equal(d.argmin(1), torch.arange(4).repeat_interleave(2))
