"""TCaF: the cross-attention-only mask and what follows from it, padding invariance, time embedding, the losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.config import resolve_hparams
from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.layers import MaskedBatchNorm
from training.models.temporal_transformer import (
    AUDIO,
    CLS,
    VIDEO,
    FourierTimeEmbedding,
    attention_mask,
    token_groups,
)

DIMS = InputDims(audio=6, video=5, text=8, audio_step_seconds=0.96, video_step_seconds=0.64)
SMALL = {"model_dim": 32, "enc_hidden": 32, "dec_hidden": 32, "embed_dim": 8, "mlp_dim": 32, "depth": 2, "heads": 2,
         "dim_head": 16, "enc_dropout": 0.0, "dec_dropout": 0.0, "add_dropout": 0.0, "transformer_dropout": 0.0,
         "embed_dropout": 0.0, "audio_divisor": 1.0}


def make_batch(n=8, t_audio=4, t_video=5, n_classes=4, seed=0, text=None):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, t_audio, DIMS.audio, generator=g)
    video = torch.randn(n, t_video, DIMS.video, generator=g)
    a_len = torch.randint(1, t_audio + 1, (n,), generator=g)
    v_len = torch.randint(1, t_video + 1, (n,), generator=g)
    audio_pad = torch.arange(t_audio)[None] >= a_len[:, None]
    video_pad = torch.arange(t_video)[None] >= v_len[:, None]
    audio, video = audio * ~audio_pad[..., None], video * ~video_pad[..., None]
    label = torch.arange(n) % n_classes + 3  # global ids 3..6: exercises the remapping to 0..C-1
    text = torch.randn(10, DIMS.text, generator=g) if text is None else text
    return Batch(audio=audio.sum(1) / a_len[:, None], video=video.sum(1) / v_len[:, None], label=label,
                 text=text[label], audio_seq=audio, audio_pad=audio_pad, video_seq=video, video_pad=video_pad), text


def model(**hp):
    torch.manual_seed(0)
    return build_model("tcaf", DIMS, {**SMALL, **hp})


def test_cross_attention_mask_by_hand():
    # tokens [CLS, a0, a1, v0, v1]; sample 0 has a1 padded
    groups = token_groups(2, 2, torch.device("cpu"))
    assert groups.tolist() == [CLS, AUDIO, AUDIO, VIDEO, VIDEO]
    key_pad = torch.tensor([[False, False, True, False, False], [False] * 5])
    m = attention_mask(groups, key_pad, "cross").int()
    expected0 = [[1, 1, 0, 1, 1],  # CLS sees every valid token
                 [1, 0, 0, 1, 1],  # audio sees CLS and video, never audio
                 [1, 0, 0, 1, 1],  # the padded audio query keeps its modality's row (output never read)
                 [1, 1, 0, 0, 0],  # video sees CLS and valid audio, never video
                 [1, 1, 0, 0, 0]]
    expected1 = [[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert m[0].tolist() == expected0
    assert m[1].tolist() == expected1
    assert attention_mask(groups, key_pad, "self").int()[1].tolist() == [
        [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1]]


def test_no_query_row_is_fully_masked():
    groups = token_groups(3, 4, torch.device("cpu"))
    key_pad = torch.ones(16, 8, dtype=torch.bool)
    key_pad[:, 0] = False  # CLS is never padded; everything else padded, the worst case
    key_pad[8:, 1] = False
    for rule in ("cross", "self", "full"):
        assert attention_mask(groups, key_pad, rule).any(-1).all()


def first_layer_attention(m, batch):
    x, groups, key_pad = m.embed_tokens(batch)
    norm, attn, _ = m.transformer.layers[0]
    return attn(norm(x), attention_mask(groups, key_pad, "cross"))


def test_audio_token_does_not_attend_audio():
    # without the time-axis video normalisation, which by design couples a video's steps before the transformer
    m = model(video_time_norm=False).eval()
    batch, _ = make_batch(t_audio=4, t_video=3)
    batch.audio_pad[:] = False
    batch.video_pad[:] = False
    changed, _ = make_batch(t_audio=4, t_video=3)
    changed.audio_pad[:] = False
    changed.video_pad[:] = False
    changed.audio_seq = batch.audio_seq.clone()
    changed.video_seq = batch.video_seq
    changed.audio_seq[:, 2] += 3.0  # only audio step 2 changes
    with torch.no_grad():
        before, after = first_layer_attention(m, batch), first_layer_attention(m, changed)
    audio_tokens = [1, 2, 4]  # tokens of audio steps 0, 1, 3 (token index = 1 + step)
    torch.testing.assert_close(before[:, audio_tokens], after[:, audio_tokens])
    assert not torch.allclose(before[:, 0], after[:, 0])  # CLS attends audio
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # video tokens attend audio
    # symmetric: changing one video step leaves the other video tokens' first-layer attention unchanged
    changed.audio_seq = batch.audio_seq
    changed.video_seq = batch.video_seq.clone()
    changed.video_seq[:, 0] -= 2.0
    with torch.no_grad():
        after = first_layer_attention(m, changed)
    torch.testing.assert_close(before[:, 6:], after[:, 6:])
    assert not torch.allclose(before[:, 1:5], after[:, 1:5])


@pytest.mark.parametrize("training", [False, True])
def test_padding_has_no_effect(training):
    m = model(video_time_norm=True)
    m.train(training)
    batch, text = make_batch(t_audio=3, t_video=4)
    extra = 3  # the same videos padded to longer sequences, with garbage in the padded steps
    longer = Batch(audio=batch.audio, video=batch.video, label=batch.label, text=batch.text,
                   audio_seq=torch.cat([batch.audio_seq, 5 * torch.randn(8, extra, DIMS.audio)], 1),
                   audio_pad=torch.cat([batch.audio_pad, torch.ones(8, extra, dtype=torch.bool)], 1),
                   video_seq=torch.cat([batch.video_seq, 5 * torch.randn(8, extra, DIMS.video)], 1),
                   video_pad=torch.cat([batch.video_pad, torch.ones(8, extra, dtype=torch.bool)], 1))
    longer.audio_seq[:, :3][batch.audio_pad] = 7.0  # garbage inside the original padding too
    with torch.no_grad():
        short_out = m.theta_o(batch)
        long_out = m.theta_o(longer)
    torch.testing.assert_close(short_out, long_out, rtol=1e-5, atol=1e-5)


def test_masked_batch_norm_uses_valid_rows_only():
    bn = MaskedBatchNorm(2, momentum=0.5)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]])
    valid = torch.tensor([True, True, False])
    out = bn(x, valid)
    torch.testing.assert_close(out[:2], F.batch_norm(x[:2], None, None, training=True))
    torch.testing.assert_close(bn.running_mean, torch.tensor([1.0, 2.0]))  # 0.5 * 0 + 0.5 * (2, 4)
    torch.testing.assert_close(bn.running_var, torch.tensor([1.5, 4.5]))  # 0.5 * 1 + 0.5 * unbiased (2, 8)


def test_time_embedding_uses_seconds_in_training_and_evaluation():
    m = model()
    batch, _ = make_batch()
    tokens = m.tokens
    phi = torch.zeros(1, 4, SMALL["model_dim"])
    pad = torch.zeros(1, 4, dtype=torch.bool)
    seconds = torch.arange(4.0) * DIMS.audio_step_seconds
    emb = tokens.modality.weight[0] + tokens.time(seconds)
    expected = tokens.out[0](torch.cat([phi, emb[None]], -1))
    for training in (True, False):
        tokens.train(training)
        torch.testing.assert_close(tokens(phi, pad, 0), expected)
    # the embedding is the random-Fourier form Linear([sin 2πtf, cos 2πtf])
    time = FourierTimeEmbedding(6, 10.0)
    t = torch.tensor([0.0, 0.64])
    phase = 2 * math.pi * t[:, None] * time.freqs
    torch.testing.assert_close(time(t), time.proj(torch.cat([phase.sin(), phase.cos()], -1)))


def test_cross_entropy_over_all_training_classes_with_remapped_targets():
    m = model(reg_loss=False, rec_loss=False).eval()  # eval: deterministic BatchNorm for the comparison
    batch, text = make_batch()
    ids = torch.tensor([3, 4, 5, 6])
    m.set_training_classes(ids, text[ids])
    loss, parts = m.loss(batch)
    logits = m.theta_o(batch) @ m.W_proj(text[ids]).t()
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch.label - 3))
    assert set(parts) == {"ce"}


def test_all_parameters_get_gradients():
    m = model(enc_dropout=0.2, transformer_dropout=0.1, embed_dropout=0.1)
    batch, text = make_batch()
    ids = torch.tensor([3, 4, 5, 6])
    m.set_training_classes(ids, text[ids])
    loss, parts = m.loss(batch)
    assert set(parts) == {"ce", "reg", "rec"}
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    m.eval()
    emb = m.embed_videos(batch.without_text())
    assert emb["both"].shape == (8, 64) and m.distances(emb, m.embed_classes(text))["both"].shape == (8, 10)


def test_overfits_a_tiny_batch():
    m = model()
    batch, text = make_batch(n=8, n_classes=4, seed=3)
    ids = torch.tensor([3, 4, 5, 6])
    m.set_training_classes(ids, text[ids])
    opt = m.configure_optimizers(1e-3, 0.0)
    first = m.train_step(batch, opt)["loss"]
    for _ in range(150):
        last = m.train_step(batch, opt)["loss"]
    assert last < 0.3 * first
    m.eval()
    with torch.no_grad():
        d = m.distances(m.embed_videos(batch.without_text()), m.embed_classes(text[ids]))["both"]
    assert (ids[d.argmin(1)] == batch.label).all()


@pytest.mark.parametrize("profile", ["ucf/cls", "ucf/main", "activitynet/cls", "activitynet/main", "vggsound/cls",
                                     "vggsound/main", "demo"])
def test_every_profile_builds(profile):
    hp = resolve_hparams("tcaf", profile)
    m = build_model("tcaf", DIMS, hp["model"])
    assert m.hp["attention"] == "cross" and hp["train"]["batch_size"] == 64
