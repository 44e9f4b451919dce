"""Hyper-alignment: the Poincaré-ball maps, the alignment loss, and training on a tiny batch."""

import pytest
import torch
from helpers import parameters_without_gradient, toy_batch

from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.hyperalignment import (
    cosine_matrix,
    expmap0,
    hyperbolic_alignment,
    logmap0,
    project,
)

C = 0.01  # curvature of the reference runs: ball radius 1/sqrt(c) = 10


def test_logmap0_inverts_expmap0():
    g = torch.Generator().manual_seed(0)
    norms = torch.logspace(-4, 1.4, 32, dtype=torch.float64)[:, None]  # sqrt(c)*||x|| from 1e-5 to 2.5
    x = torch.nn.functional.normalize(torch.randn(32, 300, generator=g, dtype=torch.float64), dim=1) * norms
    y = expmap0(x, C)
    assert (y.norm(dim=1) < C ** -0.5).all()
    torch.testing.assert_close(logmap0(y, C), x, rtol=1e-7, atol=1e-9)


def test_expmap0_by_hand():
    # u = (3, 4): ||u|| = 5, sqrt(c)||u|| = 0.5 -> expmap0(u) = tanh(0.5) u / 0.5
    u = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    expected = torch.tanh(torch.tensor(0.5, dtype=torch.float64)) * u / 0.5
    torch.testing.assert_close(expmap0(u, C), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_keeps_points_inside_the_ball(dtype):
    radius = C ** -0.5
    far = torch.tensor([[1e4, -2e3, 5.0], [30.0, 0.0, 0.0], [0.0, 10.0, 0.0]], dtype=dtype)
    inside = torch.tensor([[1.0, 2.0, 3.0], [9.0, 0.0, 0.0]], dtype=dtype)
    p_far = project(far, C)
    assert (p_far.norm(dim=1) < radius).all()
    torch.testing.assert_close(p_far / p_far.norm(dim=1, keepdim=True), far / far.norm(dim=1, keepdim=True))
    torch.testing.assert_close(project(inside, C), inside)  # points inside are left alone
    # and the tangent vectors of projected points stay finite
    assert torch.isfinite(logmap0(p_far, C)).all()


def test_loss_is_zero_for_identical_embeddings_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    phi = torch.relu(torch.randn(16, 300, generator=g)) * 3
    assert hyperbolic_alignment(phi, phi.clone(), C).item() == 0.0
    other = torch.relu(torch.randn(16, 300, generator=g)) * 3
    assert hyperbolic_alignment(phi, other, C).item() > 0


def test_maps_at_the_origin_are_radial_so_cosines_are_unchanged():
    # project and logmap0 rescale each vector by a positive factor: the documented reason why the loss equals the
    # Euclidean cosine-matrix MSE of the encoder outputs
    g = torch.Generator().manual_seed(2)
    phi = torch.randn(8, 300, generator=g, dtype=torch.float64) * 5
    torch.testing.assert_close(cosine_matrix(logmap0(project(phi, C), C)), cosine_matrix(phi))


# ------------------------------------------------------------------------------------------------ the model
DIMS = InputDims(audio=16, video=12, text=10)
NO_DROPOUT = {"enc_dropout": 0.0, "proj_dropout": 0.0, "dec_dropout": 0.0}


def tiny_batch(seed: int = 0) -> tuple[Batch, torch.Tensor]:
    return toy_batch(DIMS, seed)


def test_alignment_term_is_computed_on_encoder_outputs_of_both_batches():
    torch.manual_seed(0)
    model = build_model("hyperalignment", DIMS, NO_DROPOUT).eval()  # eval: BatchNorm statistics are fixed
    batch, _ = tiny_batch()
    total, parts = model.loss(batch)
    expected = 1e-3 * sum(hyperbolic_alignment(model.V_enc(b.video), model.A_enc(b.audio), C)
                          for b in (batch, batch.neg))
    torch.testing.assert_close(parts["align"], expected)
    torch.testing.assert_close(total, sum(parts.values()))
    assert set(parts) == {"rec", "ct", "w", "t", "r", "align"}


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("hyperalignment", DIMS)
    batch, _ = tiny_batch()
    loss, _ = model.loss(batch)
    loss.backward()
    assert parameters_without_gradient(model) == []


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model("hyperalignment", DIMS, NO_DROPOUT)
    batch, text = tiny_batch()
    model.set_training_classes(torch.arange(4), text)
    opt = model.configure_optimizers(1e-3, 0.0)
    losses = [float(model.train_step(batch, opt)["loss"]) for _ in range(150)]
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["video"]
    assert d.shape == (8, 4)
    assert torch.equal(d.argmin(1), batch.label)
