"""The temporal audio-visual transformer shared by TCaF and SACMA (docs/models/tcaf.md, docs/models/sacma.md).

A video becomes the token sequence [CLS, audio_1..T_a, video_1..T_v]: every step is encoded (A_enc / V_enc), joined
with a modality + time + padding embedding and projected; a PreNorm transformer runs over the tokens under an
attention mask, and the CLS output is projected into the joint space with the class text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.models.base import InputDims, ZSLModel
from training.models.layers import EmbeddingNet, FeedForward, MaskedBatchNorm

CLS, AUDIO, VIDEO = 0, 1, 2  # token groups
MASK_RULES = ("cross", "self", "full")

# Hyper-parameters of the shared architecture; defaults are TCaF's UCF-GZSL(cls) configuration.
BACKBONE_HPARAMS = {
    "model_dim": 300,  # transformer width; A_enc / V_enc output
    "proj_dim": 64,  # joint space of theta_o and theta_w
    "enc_hidden": 512,  # A_enc / V_enc hidden layer
    "dec_hidden": 512,  # O_proj / D_o hidden layer
    "embed_dim": 64,  # modality + time + padding embedding, concatenated to every step
    "fourier_scale": 10.0,  # std of the random Fourier time frequencies (per draw)
    "depth": 6,
    "heads": 8,
    "dim_head": 64,
    "mlp_dim": 128,
    "enc_dropout": 0.3,  # A_enc, V_enc
    "dec_dropout": 0.1,  # O_proj, D_o
    "add_dropout": 0.1,  # W_proj, D_w
    "transformer_dropout": 0.3,  # attention output and feed-forward
    "embed_dropout": 0.2,  # after the token projection
    "audio_divisor": 255.0,  # audio steps are divided by this (VGGish values are 0..255)
    "video_time_norm": True,  # L2-normalise every video channel over the time axis
}


class StepEncoder(nn.Module):
    """A_enc / V_enc on every step: (Linear -> BatchNorm -> ReLU -> Dropout) x 2, in -> hidden -> out."""

    def __init__(self, d_in: int, d_out: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(d_in, hidden), MaskedBatchNorm(hidden)
        self.fc2, self.bn2 = nn.Linear(hidden, d_out), MaskedBatchNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T)
        b, t, _ = x.shape
        valid = ~pad.reshape(b * t)
        h = self.drop(F.relu(self.bn1(self.fc1(x.reshape(b * t, -1)), valid)))
        h = self.drop(F.relu(self.bn2(self.fc2(h), valid)))
        return h.reshape(b, t, -1)


class FourierTimeEmbedding(nn.Module):
    """Random Fourier features of a time in seconds, then a linear layer: Linear([sin(2πtf), cos(2πtf)]).

    The reference draws two rows of N(0, scale²) frequencies and multiplies the duplicated time by both, i.e. uses
    their sum; we store that sum (a fixed buffer, saved with the model)."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.register_buffer("freqs", (scale * torch.randn(2, dim // 2)).sum(0))
        self.proj = nn.Linear(2 * (dim // 2), dim)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:  # (T,) -> (T, dim)
        phase = 2 * math.pi * seconds[:, None] * self.freqs
        return self.proj(torch.cat([phase.sin(), phase.cos()], dim=-1))


class AudioVisualTokens(nn.Module):
    """Encoded steps -> tokens: concat(phi_t, modality + time(t · step seconds) + padding embedding), projected
    back to ``model_dim`` (the reference's Conv1d with kernel 1, i.e. a per-step linear layer), then dropout."""

    def __init__(self, model_dim: int, embed_dim: int, fourier_scale: float, dropout: float,
                 step_seconds: tuple[float, float]):
        super().__init__()
        self.modality = nn.Embedding(2, embed_dim)
        self.pad = nn.Parameter(torch.randn(embed_dim))
        self.time = FourierTimeEmbedding(embed_dim, fourier_scale)
        self.out = nn.ModuleList(nn.Linear(model_dim + embed_dim, model_dim) for _ in range(2))
        self.drop = nn.Dropout(dropout)
        self.step_seconds = step_seconds

    def forward(self, phi: torch.Tensor, pad: torch.Tensor, modality: int) -> torch.Tensor:
        b, t, _ = phi.shape
        seconds = torch.arange(t, device=phi.device, dtype=phi.dtype) * self.step_seconds[modality]
        emb = self.modality.weight[modality] + self.time(seconds) + pad[..., None].to(phi.dtype) * self.pad
        return self.drop(self.out[modality](torch.cat([phi, emb.expand(b, t, -1)], dim=-1)))


def token_groups(t_audio: int, t_video: int, device: torch.device) -> torch.Tensor:
    """(1 + T_a + T_v,) group of every token of [CLS, audio, video]."""
    return torch.cat([torch.full((1,), CLS, device=device), torch.full((t_audio,), AUDIO, device=device),
                      torch.full((t_video,), VIDEO, device=device)])


def attention_mask(groups: torch.Tensor, key_pad: torch.Tensor, rule: str = "cross",
                   visible: tuple[int, ...] = (CLS, AUDIO, VIDEO)) -> torch.Tensor:
    """(B, N, N) mask, True where query i may attend key j.

    ``cross``: audio and video tokens attend only the other modality (and CLS); ``self``: only their own modality
    (and CLS); ``full``: everything. CLS attends every token and every token attends CLS. Padded keys and keys of
    groups outside ``visible`` are blocked for every query. CLS is never padded, so no query row is fully masked
    (padded queries keep their modality's row: their outputs are never read, and NaN-free)."""
    if rule not in MASK_RULES:
        raise ValueError(f"attention rule must be one of {MASK_RULES}, got {rule!r}")
    q, k = groups[:, None], groups[None, :]
    involves_cls = (q == CLS) | (k == CLS)
    if rule == "cross":
        allowed = involves_cls | (q != k)
    elif rule == "self":
        allowed = involves_cls | (q == k)
    else:
        allowed = torch.ones_like(involves_cls)
    key_visible = torch.isin(groups, torch.tensor(visible, device=groups.device))
    return allowed[None] & (key_visible[None, None, :] & ~key_pad[:, None, :])


class MaskedAttention(nn.Module):
    """Multi-head attention under a boolean mask (True = may attend); dropout on the output projection only."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in self.to_qkv(x).chunk(3, -1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class TemporalTransformer(nn.Module):
    """``depth`` PreNorm layers x += Attn(LN(x)); x += FF(LN(x)), one LayerNorm per layer shared by both
    sublayers (as the reference)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(dim), MaskedAttention(dim, heads, dim_head, dropout),
                           FeedForward(dim, mlp_dim, dropout)]) for _ in range(depth))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        for norm, attn, ff in self.layers:
            x = attn(norm(x), allowed) + x
            x = ff(norm(x)) + x
        return x


class TemporalAVModel(ZSLModel):
    """Modules and forward passes common to TCaF and SACMA; subclasses define the losses and the registry entry."""

    needs_sequences = True
    needs_negatives = False
    eval_modes = ("both",)
    primary_mode = "both"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        d, p = hp["model_dim"], hp["proj_dim"]
        self.A_enc = StepEncoder(dims.audio, d, hp["enc_hidden"], hp["enc_dropout"])
        self.V_enc = StepEncoder(dims.video, d, hp["enc_hidden"], hp["enc_dropout"])
        self.tokens = AudioVisualTokens(d, hp["embed_dim"], hp["fourier_scale"], hp["embed_dropout"],
                                        (dims.audio_step_seconds, dims.video_step_seconds))
        self.cls_token = nn.Parameter(torch.randn(d))
        self.transformer = TemporalTransformer(d, hp["depth"], hp["heads"], hp["dim_head"], hp["mlp_dim"],
                                               hp["transformer_dropout"])
        self.O_proj = EmbeddingNet(d, p, hp["dec_hidden"], hp["dec_dropout"])
        self.D_o = EmbeddingNet(p, dims.text, hp["dec_hidden"], hp["dec_dropout"])
        self.W_proj = EmbeddingNet(dims.text, p, None, hp["add_dropout"])
        self.D_w = EmbeddingNet(p, dims.text, None, hp["add_dropout"])

    def preprocess(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference input scaling; padded steps are zeroed first so that the time-axis norm sees valid steps only."""
        a = batch.audio_seq.masked_fill(batch.audio_pad[..., None], 0.0) / self.hp["audio_divisor"]
        v = batch.video_seq.masked_fill(batch.video_pad[..., None], 0.0)
        return a, F.normalize(v, dim=1) if self.hp["video_time_norm"] else v

    def embed_tokens(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[CLS, audio, video] tokens (B, N, model_dim), their groups (N,) and padding (B, N)."""
        a, v = self.preprocess(batch)
        x_a = self.tokens(self.A_enc(a, batch.audio_pad), batch.audio_pad, 0)
        x_v = self.tokens(self.V_enc(v, batch.video_pad), batch.video_pad, 1)
        b = x_a.shape[0]
        x = torch.cat([self.cls_token.expand(b, 1, -1), x_a, x_v], dim=1)
        groups = token_groups(x_a.shape[1], x_v.shape[1], x.device)
        key_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), batch.audio_pad,
                             batch.video_pad], dim=1)
        return x, groups, key_pad

    def cls_output(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self.transformer(x, allowed)[:, 0]

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"both": self.W_proj(text)}
