"""ALE, SJE and DeViSE: the three ranking losses on hand-computed scores, the bilinear model, and overfitting."""

import math

import pytest
import torch
from helpers import first_and_last_loss

from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.bilinear import margin_violations, rank_weights, ranking_hinge

# Sample 0, true class 0 (score 1.0): class 1 violates the 0.1 margin by 0.05, class 3 by 0.3, class 2 does not.
# Sample 1, true class 1 (score 2.0): no violation.
SCORES = torch.tensor([[1.0, 0.95, 0.5, 1.2], [0.0, 2.0, 0.0, 0.0]])
TARGET = torch.tensor([0, 1])
MARGIN = 0.1


def test_margin_violations_by_hand():
    cost = margin_violations(SCORES, TARGET, MARGIN)
    torch.testing.assert_close(cost, torch.tensor([[0.0, 0.05, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0]]))


def test_sje_takes_only_the_max_violation():
    # (0.3 + 0) / 2: the 0.05 violation of class 1 plays no part
    assert float(ranking_hinge(SCORES, TARGET, MARGIN, "max")) == pytest.approx(0.15, abs=1e-6)
    scores = SCORES.clone().requires_grad_()
    ranking_hinge(scores, TARGET, MARGIN, "max").backward()
    # gradient only through the true class and the most violating class of sample 0
    torch.testing.assert_close(scores.grad, torch.tensor([[-0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))


def test_devise_sums_all_violations():
    assert float(ranking_hinge(SCORES, TARGET, MARGIN, "sum")) == pytest.approx((0.05 + 0.3) / 2, abs=1e-6)
    scores = SCORES.clone().requires_grad_()
    ranking_hinge(scores, TARGET, MARGIN, "sum").backward()
    torch.testing.assert_close(scores.grad, torch.tensor([[-1.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))


def test_ale_rank_weights_by_hand():
    # l(r)/r with l(r) = sum_{k<=r} 1/k; no violation -> weight 0
    w = rank_weights(torch.tensor([0, 1, 2, 3, 4]), n_classes=5)
    assert w.tolist() == pytest.approx([0.0, 1.0, 1.5 / 2, (1 + 1 / 2 + 1 / 3) / 3, (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4])


def test_ale_weights_the_violations_by_rank():
    # sample 0 has rank 2 (two violating classes): weight (1 + 1/2) / 2 = 0.75 on the sum 0.35
    assert float(ranking_hinge(SCORES, TARGET, MARGIN, "weighted")) == pytest.approx(0.75 * 0.35 / 2, abs=1e-6)
    # a sample whose true class is beaten by every other class is weighted less per violation than one at rank 1
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, -1.0, -1.0]])
    cost = margin_violations(scores, torch.tensor([0, 0]), MARGIN).sum(1)
    per_sample = [float(ranking_hinge(scores[i:i + 1], torch.tensor([0]), MARGIN, "weighted")) for i in range(2)]
    assert per_sample[0] == pytest.approx(cost[0].item() * (1 + 1 / 2 + 1 / 3) / 3, abs=1e-6)
    assert per_sample[1] == pytest.approx(cost[1].item() * 1.0, abs=1e-6)


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError):
        ranking_hinge(SCORES, TARGET, MARGIN, "mean")


DIMS = InputDims(audio=6, video=5, text=8)


def _model(name: str, **hp) -> torch.nn.Module:
    return build_model(name, DIMS, {"dropout": 0.0, **hp})


def _toy(n_classes: int = 4, per_class: int = 2, seed: int = 0, class_ids=(2, 5, 7, 9)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(class_ids[:n_classes])
    text = torch.nn.functional.normalize(torch.randn(n_classes, DIMS.text, generator=g), dim=1)
    label = ids.repeat_interleave(per_class)
    col = torch.arange(n_classes).repeat_interleave(per_class)
    batch = Batch(audio=torch.randn(len(label), DIMS.audio, generator=g),
                  video=torch.randn(len(label), DIMS.video, generator=g), label=label, text=text[col])
    return batch, ids, text


@pytest.mark.parametrize("name,reduction", [("ale", "weighted"), ("sje", "max"), ("devise", "sum")])
def test_model_loss_is_its_ranking_hinge_over_the_training_classes(name, reduction):
    batch, ids, text = _toy()
    model = _model(name)
    model.set_training_classes(ids, text)
    assert model.reduction == reduction and model.family == "ZSL"
    scores = (model.W(torch.cat([batch.video, batch.audio], 1)) @ text.T).detach()
    target = torch.arange(4).repeat_interleave(2)  # global ids 2, 5, 7, 9 -> columns 0..3
    loss, _ = model.loss(batch)
    assert float(loss.detach()) == pytest.approx(float(ranking_hinge(scores, target, 0.1, reduction)), rel=1e-5)
    loss.backward()
    assert model.W.weight.grad is not None and model.W.weight.grad.abs().sum() > 0


def test_l2_distance_ranks_classes_like_the_compatibility():
    # ||Wx - t||^2 = ||Wx||^2 - 2 Wx.t + 1 for unit-norm text: nearest class = most compatible class
    batch, ids, text = _toy(per_class=5, seed=3)
    model = _model("devise").eval()
    v = model.embed_videos(batch.without_text())
    c = model.embed_classes(text)
    d_l2 = model.distances(v, c)["both"]
    assert d_l2.shape == (20, 4)
    assert torch.equal(d_l2.argmin(1), (v["both"] @ text.T).argmax(1))
    assert torch.allclose(d_l2, torch.cdist(model.W(torch.cat([batch.video, batch.audio], 1)), text))
    compat = _model("devise", eval_distance="compatibility")
    compat.load_state_dict(model.state_dict())
    d_c = compat.eval().distances(compat.embed_videos(batch.without_text()), compat.embed_classes(text))["both"]
    assert torch.allclose(d_c, -(v["both"] @ text.T))


def test_norm_inputs_makes_the_projection_scale_free():
    batch, _, _ = _toy()
    model = _model("ale", norm_inputs=True).eval()
    scaled = Batch(audio=7 * batch.audio, video=7 * batch.video, label=batch.label)
    assert torch.allclose(model.embed_videos(batch)["both"], model.embed_videos(scaled)["both"], atol=1e-6)


def test_bilinear_has_no_bias_and_the_published_size():
    model = build_model("sje", InputDims(audio=512, video=512, text=300))
    assert sum(p.numel() for p in model.parameters()) == 307_200  # "307.2k parameters" (AVCA paper, App. B.4)


@pytest.mark.parametrize("name", ["ale", "sje", "devise"])
def test_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    batch, ids, text = _toy(seed=1)
    model = _model(name)
    model.set_training_classes(ids, text)
    first, last = first_and_last_loss(model, lambda _: batch, 151, lr=0.05)
    assert last < 0.1 * first
    model.eval()
    d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["both"]
    assert torch.equal(ids[d.argmin(1)], batch.label)
    assert math.isfinite(last)
