"""CJME: the modality-attention gate (threshold, supervision, use at test time), the loss, overfitting."""

import math

import pytest
import torch
from helpers import first_and_last_loss
from torch import nn

from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.cjme import gate_targets, prediction_entropy

DIMS = InputDims(audio=3, video=2, text=4)


def _model(**hp) -> nn.Module:
    return build_model("cjme", DIMS, {"embed_hidden": 16, "text_hidden": 8, "embed_dim": 16, **hp})


def _set_gate(model, weight: list[float], bias: float = 0.0) -> None:
    """Gate = sigmoid(w · [audio; video] + b): BatchNorm made the identity in eval mode."""
    bn, lin = model.gate[0], model.gate[1]
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # x / sqrt(var + eps) = x exactly
    bn.weight.data.fill_(1.0)
    bn.bias.data.zero_()
    lin.weight.data = torch.tensor([weight])
    lin.bias.data.fill_(bias)


def test_gate_threshold_chooses_the_modality():
    model = _model().eval()
    _set_gate(model, [1.0, 0.0, 0.0, 0.0, 0.0])  # attention = sigmoid(first audio feature)
    audio = torch.tensor([[0.0, 5.0, 5.0], [-0.01, 0.0, 0.0], [3.0, 0.0, 0.0], [-3.0, 9.0, 9.0]])
    video = torch.randn(4, 2)
    att = model.attention(audio, video)
    assert att.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(0.01)), 1 / (1 + math.exp(-3)),
                                          1 / (1 + math.exp(3))])
    # exactly 0.5 already counts as video; anything below is audio
    chosen = model.embed_videos(Batch(audio=audio, video=video, label=torch.zeros(4, dtype=torch.long)))
    assert chosen["use_video"].tolist() == [True, False, True, False]
    strict = _model(gate_threshold=0.9).eval()
    _set_gate(strict, [1.0, 0.0, 0.0, 0.0, 0.0])
    assert strict.choose_video(strict.attention(audio, video)).tolist() == [False, False, True, False]


def test_both_mode_uses_the_distances_of_the_chosen_modality():
    model = _model()
    videos = {"audio": torch.tensor([[0.0, 0.0], [0.0, 0.0]]), "video": torch.tensor([[3.0, 0.0], [3.0, 0.0]]),
              "use_video": torch.tensor([True, False])}
    classes = {"text": torch.tensor([[0.0, 0.0], [3.0, 0.0]])}
    d = model.distances(videos, classes)
    assert d["audio"].tolist() == [[0.0, 3.0], [0.0, 3.0]]
    assert d["video"].tolist() == [[3.0, 0.0], [3.0, 0.0]]
    assert d["both"].tolist() == [[3.0, 0.0], [0.0, 3.0]]  # row 0 from video, row 1 from audio
    assert model.primary_mode == "both" and set(model.eval_modes) == {"audio", "video", "both"}


def test_gate_targets_by_hand():
    # entropies (exactly representable): video far more unsure -> audio (0); audio far more unsure -> video (1);
    # within the margin (also exactly at it) -> 0.5
    h_a = torch.tensor([0.25, 1.0, 0.5, 0.5, 0.5])
    h_v = torch.tensor([1.0, 0.25, 0.5625, 0.625, 0.375])
    assert gate_targets(h_a, h_v, 0.125).tolist() == [0.0, 1.0, 0.5, 0.5, 0.5]


def test_prediction_entropy():
    classes = torch.eye(3)
    h = prediction_entropy(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]), classes)
    assert h[0].item() == pytest.approx(math.log(3), abs=1e-6)  # no preference: maximal entropy
    assert h[1].item() == pytest.approx(0.0, abs=1e-6)  # certain


def _toy(seed: int = 0, informative: str = "both"):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0, 3, 5, 8])
    text = torch.nn.functional.normalize(torch.randn(4, DIMS.text, generator=g), dim=1)
    label, col = ids.repeat_interleave(2), torch.arange(4).repeat_interleave(2)
    centres_a, centres_v = 3 * torch.randn(4, DIMS.audio, generator=g), 3 * torch.randn(4, DIMS.video, generator=g)
    audio = centres_a[col] + 0.1 * torch.randn(8, DIMS.audio, generator=g)
    video = centres_v[col] + 0.1 * torch.randn(8, DIMS.video, generator=g)
    if informative == "audio":
        video = torch.randn(8, DIMS.video, generator=g)
    return ids, text, label, col, audio, video


def _batches(ids, text, label, col, audio, video):
    def batch(step: int) -> Batch:  # negatives: the samples of the next, second-next or third-next class
        perm = (torch.arange(8) + 2 * (step % 3 + 1)) % 8
        neg = Batch(audio=audio[perm], video=video[perm], label=label[perm], text=text[col[perm]])
        return Batch(audio=audio, video=video, label=label, text=text[col], neg=neg)
    return batch


def test_loss_parts_and_gradients_reach_every_part():
    ids, text, label, col, audio, video = _toy()
    model = _model(dropout=0.0)
    model.set_training_classes(ids, text)
    loss, parts = model.loss(_batches(ids, text, label, col, audio, video)(0))
    assert set(parts) == {"ct", "av", "gate"}
    assert float(loss.detach()) == pytest.approx(float(sum(p.detach() for p in parts.values())))
    loss.backward()
    for net in (model.f_a, model.f_v, model.f_t, model.gate):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_batch_gate_weighting_is_the_reference_broadcast():
    ids, text, label, col, audio, video = _toy()
    torch.manual_seed(0)
    sample = _model(dropout=0.0)
    batch_w = _model(dropout=0.0, gate_weighting="batch")
    batch_w.load_state_dict(sample.state_dict())
    for m in (sample, batch_w):
        m.set_training_classes(ids, text)
    b = _batches(ids, text, label, col, audio, video)(0)
    a, v, s = sample.f_a(b.audio), sample.f_v(b.video), sample.f_t(b.text)
    alpha = sample.attention(b.audio, b.video)
    l_ta = nn.functional.triplet_margin_loss(s, a, sample.f_a(b.neg.audio), margin=1.0, reduction="none")
    l_tv = nn.functional.triplet_margin_loss(s, v, sample.f_v(b.neg.video), margin=1.0, reduction="none")
    # reference: (1 - alpha[:, None]) * l_ta[None] ... averaged over the (B, B) broadcast
    ref = ((1 - alpha[:, None]) * l_ta[None, :] + alpha[:, None] * l_tv[None, :]).mean()
    with torch.no_grad():
        assert float(batch_w.loss(b)[1]["ct"]) == pytest.approx(float(ref), rel=1e-5)
        assert float(sample.loss(b)[1]["ct"]) == pytest.approx(float(((1 - alpha) * l_ta + alpha * l_tv).mean()),
                                                                rel=1e-5)


def test_overfits_a_tiny_batch():
    """CJME's triplets are anchored at the text: they rank, for each class text, its own videos before every other
    class's videos (retrieval), which is what a fitted model must show. They do not rank, for each video, its
    class text first: a class text can end up nearer to another class's videos than that class's own text
    (docs/models/cjme.md), so classification is only required to be far above chance."""
    torch.manual_seed(0)
    ids, text, label, col, audio, video = _toy(seed=1)
    batch = _batches(ids, text, label, col, audio, video)
    model = _model(dropout=0.0)
    model.set_training_classes(ids, text)
    first, last = first_and_last_loss(model, batch, 300, lr=0.01)
    assert last < 0.3 * first
    model.eval()
    videos, classes = model.embed_videos(batch(0).without_text()), model.embed_classes(text)
    own = col[None, :] == torch.arange(4)[:, None]  # (class, sample)
    for mode in ("audio", "video"):
        d = torch.cdist(classes["text"], videos[mode])  # (class, sample)
        farthest_own = d.masked_fill(~own, -1).max(1).values
        nearest_other = d.masked_fill(own, float("inf")).min(1).values
        assert (farthest_own < nearest_other).all(), mode
    d = model.distances(videos, classes)["both"]
    assert (ids[d.argmin(1)] == label).float().mean() >= 0.5  # chance: 0.25


def test_gate_learns_to_trust_the_informative_modality():
    torch.manual_seed(0)
    ids, text, label, col, audio, _ = _toy(seed=2)
    noisy = _batches(ids, text, label, col, audio, torch.randn(8, DIMS.video))

    def batch(step: int) -> Batch:  # the video features are fresh noise at every step: nothing to learn there
        b = noisy(step)
        b.video, b.neg.video = torch.randn(8, DIMS.video), torch.randn(8, DIMS.video)
        return b

    model = _model(dropout=0.0)
    model.set_training_classes(ids, text)
    opt = model.configure_optimizers(0.01, 0.0)
    for step in range(300):
        model.train_step(batch(step), opt)
    model.eval()
    chosen = model.embed_videos(batch(0).without_text())["use_video"]
    assert chosen.float().mean() <= 0.25  # audio for (almost) every video
