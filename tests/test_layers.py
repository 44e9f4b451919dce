"""Shared layers: the CPU dropout, the fused path of the masked BatchNorm, recordable layers."""

import pytest
import torch

from training.models.layers import Affine, MaskedBatchNorm, RecordableLinear, fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_fast_dropout_keeps_each_entry_with_probability_one_minus_p_and_rescales(p):
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    y = fast_dropout(x, p, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    rate, n = kept.float().mean().item(), x.numel()
    assert abs(rate - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    # neighbouring entries (which share a random 64-bit word) are independent
    pairs = kept[:, 0::2].float() * kept[:, 1::2].float()
    assert abs(pairs.mean().item() - (1 - p) ** 2) < 0.01
    # the expectation is preserved
    assert abs(y.mean().item() - 1.0) < 0.02


def test_fast_dropout_is_identity_in_evaluation_and_reproducible_under_a_seed():
    x = torch.randn(64, 32)
    assert fast_dropout(x, 0.3, training=False) is x
    torch.manual_seed(5)
    a = fast_dropout(x, 0.3, training=True)
    torch.manual_seed(5)
    torch.testing.assert_close(fast_dropout(x, 0.3, training=True), a)


def test_fast_dropout_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(50, 40, requires_grad=True)
    y = fast_dropout(x, 0.25, training=True)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.75)


def test_unmasked_batch_norm_equals_the_masked_one_with_every_entry_valid():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 6) * 3 + 1
    a, b = MaskedBatchNorm(6, momentum=0.2), MaskedBatchNorm(6, momentum=0.2)
    out_masked = a(x, torch.ones(5, 7, dtype=torch.bool))
    torch.testing.assert_close(b(x), out_masked)
    torch.testing.assert_close(b.running_mean, a.running_mean)
    torch.testing.assert_close(b.running_var, a.running_var)
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x, torch.ones(5, 7, dtype=torch.bool)))


@pytest.mark.parametrize("layer", [RecordableLinear(6, 4), Affine(6)])
def test_recording_layers_give_the_same_outputs_and_input_gradients_and_record_the_output_gradient(layer):
    torch.manual_seed(0)
    if isinstance(layer, Affine):
        with torch.no_grad():
            layer.weight.normal_(), layer.bias.normal_()
    x = torch.randn(3, 6, requires_grad=True)
    plain = layer(x)
    gx_plain, = torch.autograd.grad(plain.pow(2).sum(), x)
    records = []

    def recorder(inp):
        records.append([inp.detach(), None])
        return records[-1]
    layer.recorder = recorder
    try:
        out = layer(x)
        out.pow(2).sum().backward()
    finally:
        layer.recorder = None
    torch.testing.assert_close(out, plain)
    torch.testing.assert_close(x.grad, gx_plain)
    torch.testing.assert_close(records[0][1], 2 * plain.detach())
    assert layer.weight.grad is None  # left to the recorder
