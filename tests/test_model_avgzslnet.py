"""AVGZSLNet: the cross-modal decoder and composite triplet loss by hand, the three evaluation modes, overfitting."""

import math

import pytest
import torch
from helpers import first_and_last_loss
from torch import nn

from training.data.batch import Batch
from training.models import InputDims, build_model


def _identity_model() -> nn.Module:
    """AVGZSLNet on 2-d inputs with every net replaced by the identity, so the loss can be computed by hand."""
    model = build_model("avgzslnet", InputDims(audio=2, video=2, text=2), {"embed_dim": 2})
    model.F_A = model.F_V = model.F_T = model.F_DEC = nn.Identity()
    return model


def test_loss_by_hand():
    t = lambda *x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    neg = Batch(audio=t(0, 1), video=t(2, 0), label=torch.tensor([1]), text=t(0, 1))
    batch = Batch(audio=t(1, 0), video=t(0, 2), label=torch.tensor([0]), text=t(1, 0), neg=neg)
    loss, parts = _identity_model().loss(batch)
    # decoded (unit-normalised): text (1,0), audio (1,0), video (0,1); negatives audio (0,1), video (1,0)
    r2, r5 = math.sqrt(2), math.sqrt(5)
    assert float(parts["rec"]) == pytest.approx(0 + 0 + r2, abs=1e-5)  # ||D(v) - w|| only
    # T(D(t), D(a), D(a-)) = max(0 - r2 + 1, 0) = 0;  T(D(t), D(v), D(v-)) = r2 - 0 + 1
    assert float(parts["cmd"]) == pytest.approx(r2 + 1, abs=1e-5)
    # T(t,a,a-) = T(a,t,t-) = 0;  T(t,v,v-) = |(1,0)-(0,2)| - |(1,0)-(2,0)| + 1 = r5;  T(v,t,t-) = r5 - 1 + 1
    assert float(parts["ct"]) == pytest.approx(2 * r5, abs=1e-5)
    assert float(loss) == pytest.approx(r2 + r2 + 1 + 2 * r5, abs=1e-5)


def test_decoder_outputs_are_unit_norm_and_the_parameter_count_is_the_published_one():
    model = build_model("avgzslnet", InputDims(audio=512, video=512, text=300)).eval()
    out = model.decode(torch.randn(5, 64))
    assert out.shape == (5, 300)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    # "AVGZSLNet [has] 1.32M parameters" (AVCA paper, App. B.4)
    assert round(sum(p.numel() for p in model.parameters()) / 1e4) == 132


def test_three_modes_and_both_is_the_sum_of_distances():
    model = build_model("avgzslnet", InputDims(audio=6, video=5, text=8)).eval()
    b = Batch(audio=torch.randn(7, 6), video=torch.randn(7, 5), label=torch.zeros(7, dtype=torch.long))
    v, c = model.embed_videos(b.without_text()), model.embed_classes(torch.randn(3, 8))
    d = model.distances(v, c)
    assert set(d) == set(model.eval_modes) == {"audio", "video", "both"} and model.primary_mode == "both"
    assert torch.allclose(d["audio"], torch.cdist(v["audio"], c["text"]))
    assert torch.allclose(d["video"], torch.cdist(v["video"], c["text"]))
    assert torch.allclose(d["both"], d["audio"] + d["video"])
    assert all(x.shape == (7, 3) for x in d.values())


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    dims = InputDims(audio=6, video=5, text=8)
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([1, 4, 6, 9])
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    label, col = ids.repeat_interleave(2), torch.arange(4).repeat_interleave(2)
    audio, video = torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g)

    def batch(step: int) -> Batch:  # negatives: the samples of the next, second-next or third-next class
        perm = (torch.arange(8) + 2 * (step % 3 + 1)) % 8
        neg = Batch(audio=audio[perm], video=video[perm], label=label[perm], text=text[col[perm]])
        return Batch(audio=audio, video=video, label=label, text=text[col], neg=neg)

    model = build_model("avgzslnet", dims, {"embed_hidden": 32, "text_hidden": 16, "decoder_hidden": 16,
                                            "embed_dropout": 0.0, "decoder_dropout": 0.0})
    model.set_training_classes(ids, text)
    first, last = first_and_last_loss(model, batch, 300, lr=0.01)
    assert last < 0.3 * first
    model.eval()
    d = model.distances(model.embed_videos(batch(0).without_text()), model.embed_classes(text))
    for mode in ("audio", "video", "both"):
        assert torch.equal(ids[d[mode].argmin(1)], label), mode
