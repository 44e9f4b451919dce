"""SACMA: the three attention passes of the shared transformer, the combined contrastive loss, the losses' weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.config import resolve_hparams
from training.data.batch import Batch
from training.models import InputDims, build_model
from training.models.sacma import CCL_PAIRS, COS_PAIRS, cosine_loss, sacma_masks, symmetric_info_nce
from training.models.temporal_transformer import token_groups

DIMS = InputDims(audio=6, video=5, text=8, audio_step_seconds=0.96, video_step_seconds=0.64)
SMALL = {"model_dim": 32, "enc_hidden": 32, "dec_hidden": 32, "embed_dim": 8, "mlp_dim": 32, "depth": 2, "heads": 2,
         "dim_head": 16, "enc_dropout": 0.0, "dec_dropout": 0.0, "add_dropout": 0.0, "transformer_dropout": 0.0,
         "embed_dropout": 0.0, "audio_divisor": 1.0}


def make_batch(n=8, t_audio=4, t_video=5, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, t_audio, DIMS.audio, generator=g)
    video = torch.randn(n, t_video, DIMS.video, generator=g)
    audio_pad = torch.arange(t_audio)[None] >= torch.randint(1, t_audio + 1, (n, 1), generator=g)
    video_pad = torch.arange(t_video)[None] >= torch.randint(1, t_video + 1, (n, 1), generator=g)
    audio, video = audio * ~audio_pad[..., None], video * ~video_pad[..., None]
    label = torch.arange(n) % n_classes
    text = torch.randn(n_classes, DIMS.text, generator=g)
    return Batch(audio=audio.mean(1), video=video.mean(1), label=label, text=text[label], audio_seq=audio,
                 audio_pad=audio_pad, video_seq=video, video_pad=video_pad), text


def model(**hp):
    torch.manual_seed(0)
    return build_model("sacma", DIMS, {**SMALL, **hp})


def test_the_three_masks_by_hand():
    # tokens [CLS, a0, a1, v0]; a1 is padded
    groups = token_groups(2, 1, torch.device("cpu"))
    key_pad = torch.tensor([[False, False, True, False]])
    masks = {k: v[0].int().tolist() for k, v in sacma_masks(groups, key_pad).items()}
    assert masks["a"] == [[1, 1, 0, 0],  # [CLS + audio] self-attention: CLS and audio see CLS and valid audio
                          [1, 1, 0, 0],
                          [1, 1, 0, 0],
                          [1, 0, 0, 0]]  # video is not part of this pass; its row only keeps CLS (never read)
    assert masks["v"] == [[1, 0, 0, 1],  # [CLS + video] self-attention
                          [1, 0, 0, 0],
                          [1, 0, 0, 0],
                          [1, 0, 0, 1]]
    assert masks["o"] == [[1, 1, 0, 1],  # [CLS + audio + video] cross-attention
                          [1, 0, 0, 1],
                          [1, 0, 0, 1],
                          [1, 1, 0, 0]]


def test_single_modality_pass_equals_the_shorter_sequence():
    m = model().eval()
    batch, _ = make_batch()
    with torch.no_grad():
        x, groups, key_pad = m.embed_tokens(batch)
        masks = sacma_masks(groups, key_pad)
        t_a = batch.audio_seq.shape[1]
        short = x[:, :1 + t_a]  # [CLS + audio] alone, attending every valid token
        short_mask = (~key_pad[:, :1 + t_a])[:, None, :].expand(-1, 1 + t_a, -1)
        torch.testing.assert_close(m.cls_output(x, masks["a"]), m.cls_output(short, short_mask))
        video_only = torch.cat([x[:, :1], x[:, 1 + t_a:]], 1)
        video_mask = (~torch.cat([key_pad[:, :1], key_pad[:, 1 + t_a:]], 1))[:, None, :].expand(
            -1, video_only.shape[1], -1)
        torch.testing.assert_close(m.cls_output(x, masks["v"]), m.cls_output(video_only, video_mask))
        thetas = m.thetas(batch)
        torch.testing.assert_close(thetas["o"], m.embed_videos(batch.without_text())["both"])


def test_info_nce_on_a_hand_computed_2x2_similarity_matrix():
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # lengths do not matter: cosine similarity
    y = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cos matrix [[1, 0.6], [0, 0.8]]

    def softplus(z):
        return math.log1p(math.exp(z))

    for tau in (1.0, 0.05):
        rows = (softplus((0.6 - 1.0) / tau) + softplus((0.0 - 0.8) / tau)) / 2  # sample -> its partner
        cols = (softplus((0.0 - 1.0) / tau) + softplus((0.6 - 0.8) / tau)) / 2  # partner -> its sample
        assert symmetric_info_nce(x, y, tau).item() == pytest.approx(rows + cols, rel=1e-5, abs=1e-9)
    # τ = 1: (log(1 + e^-0.4) + log(1 + e^-0.8)) / 2 + (log(1 + e^-1) + log(1 + e^-0.2)) / 2
    assert symmetric_info_nce(x, y, 1.0).item() == pytest.approx(0.89776, abs=1e-5)


def test_cosine_loss_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    assert cosine_loss(x, y).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)


def test_loss_weights_are_the_fixed_published_constants():
    m = model().eval()  # eval: deterministic for recomputing the parts
    assert m.hp["ccl_weights"] == {"a_w": 0.1, "v_w": 0.1, "a_v": 0.1, "o_w": 1.0, "a_o": 0.1, "v_o": 0.1}
    assert m.hp["temperature"] == 0.05 and m.hp["cos_weight"] == 0.2
    assert not any("weight_" in n or "ccl" in n for n, _ in m.named_parameters())  # constants, never learned
    batch, _ = make_batch()
    loss, parts = m.loss(batch)
    with torch.no_grad():
        th = m.thetas(batch)
        th["w"] = m.W_proj(batch.text)
        weights = [0.1, 0.1, 0.1, 1.0, 0.1, 0.1]
        ccl = sum(wt * symmetric_info_nce(th[a], th[b], 0.05) for wt, (a, b) in zip(weights, CCL_PAIRS))
        cos = 0.2 * sum(1 - F.cosine_similarity(th[a], th[b]).mean() for a, b in COS_PAIRS)
        reg = sum(F.mse_loss(th[k], th["w"]) for k in "oav")
        rec = sum(F.mse_loss(m.D_o(th[k]), batch.text) for k in "oav") + F.mse_loss(m.D_w(th["w"]), batch.text)
    torch.testing.assert_close(parts["ccl"], ccl)
    torch.testing.assert_close(parts["cos"], cos)
    torch.testing.assert_close(parts["reg"], reg)
    torch.testing.assert_close(parts["rec"], rec)
    torch.testing.assert_close(loss, ccl + cos + reg + rec)
    assert CCL_PAIRS == (("a", "w"), ("v", "w"), ("a", "v"), ("o", "w"), ("a", "o"), ("v", "o"))


def test_all_parameters_get_gradients():
    m = model(enc_dropout=0.2, transformer_dropout=0.1, embed_dropout=0.1)
    batch, text = make_batch()
    loss, _ = m.loss(batch)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    m.eval()
    emb = m.embed_videos(batch.without_text())
    assert emb["both"].shape == (8, 64) and m.distances(emb, m.embed_classes(text))["both"].shape == (8, 4)


def test_overfits_a_tiny_batch():
    m = model()
    batch, text = make_batch(n=8, n_classes=4, seed=3)
    opt = m.configure_optimizers(1e-3, 0.0)
    first = m.train_step(batch, opt)["loss"]
    for _ in range(150):
        last = m.train_step(batch, opt)["loss"]
    assert last < 0.5 * first
    m.eval()
    with torch.no_grad():
        d = m.distances(m.embed_videos(batch.without_text()), m.embed_classes(text))["both"]
    assert (d.argmin(1) == batch.label).all()


@pytest.mark.parametrize("profile", ["ucf/cls", "ucf/main", "activitynet/cls", "activitynet/main", "vggsound/cls",
                                     "vggsound/main", "demo"])
def test_every_profile_builds(profile):
    hp = resolve_hparams("sacma", profile)
    m = build_model("sacma", DIMS, hp["model"])
    assert m.hp["temperature"] == 0.05 and hp["train"]["batch_size"] == 64
