"""APN: the prototype branch (attribute regression by max-pooled prototype similarity, decorrelation, compactness)
on hand-computed cases, the training score against the evaluation distance, and overfitting a tiny batch."""

import math

import pytest
import torch
from helpers import parameters_without_gradient

from training.config import resolve_hparams
from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.apn import (
    APN,
    attribute_groups,
    compactness_loss,
    decorrelation_loss,
    relative_positions,
)

PROFILES = ["ucf/main", "ucf/cls", "activitynet/main", "activitynet/cls", "vggsound/main", "vggsound/cls", "demo"]


def _identity_model() -> APN:
    """Local features = the raw steps (identity Linear, ReLU of positive inputs), prototypes = the unit axes."""
    model = build_model("apn", InputDims(audio=2, video=2, text=2), {"hidden_dim": 2})
    with torch.no_grad():
        for enc in (model.local_video, model.local_audio):
            enc[0].weight.copy_(torch.eye(2))
            enc[0].bias.zero_()
        model.prototypes.copy_(torch.eye(2))
    return model


def _one_sample() -> Batch:
    # video: 2 valid steps and a padded one holding a huge value that must be ignored; audio: 1 valid step
    video_seq = torch.tensor([[[1.0, 2.0], [3.0, 0.5], [100.0, 100.0]]])
    audio_seq = torch.tensor([[[0.5, 4.0]]])
    return Batch(audio=audio_seq.mean(1), video=video_seq[:, :2].mean(1), label=torch.tensor([0]),
                 video_seq=video_seq, video_pad=torch.tensor([[False, False, True]]),
                 audio_seq=audio_seq, audio_pad=torch.tensor([[False]]))


def test_attributes_are_the_max_prototype_similarity_over_valid_steps():
    model = _identity_model()
    tokens, valid, positions, pooled = model.local_features(_one_sample())
    maps = model.attribute_maps(tokens)
    # attribute 0 = first coordinate: max(1, 3, 0.5) = 3; attribute 1: max(2, 0.5, 4) = 4 (the audio step)
    assert model.predicted_attributes(maps, valid).tolist() == [[3.0, 4.0]]
    # pooled = [video mean over valid steps; audio mean]
    assert pooled.tolist() == [[2.0, 1.25, 0.5, 4.0]]
    assert positions.tolist() == [[0.25, 0.75, 0.0, 0.5]]


def test_relative_positions_put_steps_on_a_common_clip_axis():
    valid = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert relative_positions(valid).tolist() == [[0.125, 0.375, 0.625, 0.875], [0.5, 0.0, 0.0, 0.0]]


def test_compactness_is_the_softmax_spread_around_the_peak():
    model = _identity_model()
    tokens, valid, positions, _ = model.local_features(_one_sample())
    got = compactness_loss(model.attribute_maps(tokens), valid, positions).detach()

    def spread(scores, pos, peak):
        z = sum(math.exp(s) for s in scores)
        return sum(math.exp(s) / z * (p - peak) ** 2 for s, p in zip(scores, pos))

    pos = [0.25, 0.75, 0.5]  # valid locations: video step 0, video step 1, audio step 0
    expected = (spread([1.0, 3.0, 0.5], pos, 0.75) + spread([2.0, 0.5, 4.0], pos, 0.5)) / 2
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # a map peaked at a single location has no spread
    one = torch.tensor([[[50.0], [0.0]]])
    assert float(compactness_loss(one, torch.tensor([[True, True]]), torch.tensor([[0.25, 0.75]]))) < 1e-12


def test_decorrelation_is_a_group_lasso_over_channels():
    p = torch.tensor([[3.0, 0.0], [4.0, 1.0], [0.0, 2.0]], requires_grad=True)
    groups = torch.tensor([0, 0, 1])
    # group 0: channel 0 ||(3, 4)|| = 5, channel 1 ||(0, 1)|| = 1; group 1: channel 0 0, channel 1 2 -> 8 / (2 * 2)
    loss = decorrelation_loss(p, groups, 2)
    assert float(loss.detach()) == pytest.approx(2.0)
    loss.backward()
    assert torch.isfinite(p.grad).all()  # the all-zero (group 1, channel 0) entry has no inf gradient
    torch.testing.assert_close(p.grad[:2, 0], torch.tensor([3.0, 4.0]) / 5 / 4)


def test_attribute_groups_gather_dimensions_that_covary_across_classes():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(6, generator=g), torch.randn(6, generator=g)
    # dims 0 and 1 follow u (dim 1 with opposite sign), dims 2 and 3 follow v
    text = torch.stack([u, -2 * u + 0.01 * v, 3 * v, v + 0.01 * u], dim=1)
    groups = attribute_groups(text, 2)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]


def test_training_score_ranks_classes_as_the_evaluation_distance():
    torch.manual_seed(0)
    model = build_model("apn", InputDims(4, 4, 5))
    z = torch.randn(7, 5)
    text = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    scores = model.class_scores(z, text)
    d = model.distances({"audio": z}, model.embed_classes(text))["audio"]
    torch.testing.assert_close(scores, -d.pow(2), rtol=1e-4, atol=1e-4)
    assert torch.equal(scores.argmax(1), d.argmin(1))


def _toy_batch(n=8, class_ids=(2, 4, 6, 8), seed=0):
    """8 samples of 4 classes with sequences of different lengths (padded), class-dependent step features."""
    g = torch.Generator().manual_seed(seed)
    k = len(class_ids)
    ids = torch.tensor(class_ids)
    compact = torch.arange(n) % k
    protos_v, protos_a = torch.randn(k, 6, generator=g), torch.randn(k, 5, generator=g)
    text_all = torch.nn.functional.normalize(torch.randn(k, 7, generator=g), dim=1)
    lengths = torch.tensor([1, 2, 3, 4, 4, 3, 2, 1])
    steps = torch.arange(4)[None]
    pad = steps >= lengths[:, None]
    video_seq = (protos_v[compact][:, None] + 0.1 * torch.randn(n, 4, 6, generator=g)) * (~pad)[..., None]
    audio_seq = (protos_a[compact][:, None] + 0.1 * torch.randn(n, 4, 5, generator=g)) * (~pad)[..., None]
    label = ids[compact]
    batch = Batch(audio=audio_seq.sum(1) / lengths[:, None], video=video_seq.sum(1) / lengths[:, None], label=label,
                  text=text_all[compact], audio_seq=audio_seq, audio_pad=pad, video_seq=video_seq, video_pad=pad)
    return batch, ids, text_all


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    batch, ids, text = _toy_batch()
    model = build_model("apn", InputDims(audio=5, video=6, text=7), {"hidden_dim": 16})
    model.set_training_classes(ids, text)
    loss, parts = model.loss(batch)
    assert set(parts) == {"cls", "reg", "ad", "cpt"}
    loss.backward()
    missing = parameters_without_gradient(model)
    assert missing == []


def test_overfits_eight_samples():
    torch.manual_seed(0)
    batch, ids, text = _toy_batch()
    model = build_model("apn", InputDims(audio=5, video=6, text=7), {"hidden_dim": 32})
    model.set_training_classes(ids, text)
    opt = model.configure_optimizers(1e-2, 0.0)
    first = None
    for _ in range(150):
        logs = model.train_step(batch, opt)
        first = first if first is not None else float(logs["loss"])
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["audio"]
    assert float(logs["loss"]) < 0.3 * first
    assert torch.equal(ids[d.argmin(1)], batch.label)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds(profile):
    hp = resolve_hparams("apn", profile.split("/")[0], profile.split("/")[1] if "/" in profile else "")
    model = build_model("apn", InputDims(audio=8, video=12, text=10), hp["model"])
    assert model.family == "ZSL" and model.needs_sequences and model.calibrated_stacking
    assert hp["train"]["epochs"] >= 1
