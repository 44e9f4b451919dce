"""f-VAEGAN-D2 (Xian et al., CVPR 2019), inductive, on concatenated audio-visual features.

A conditional VAE whose decoder is also the generator of a conditional WGAN-GP learns to synthesise features from
the class text. At evaluation it synthesises features of the split's unseen classes and trains a softmax classifier on
them and on real features of the seen classes; distances are the classifier's negative log-probabilities. Equation
map and decisions (no D2 in the inductive protocol, the real-feature memory, the feature scaling) in
docs/models/fvaegan.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.models import register
from training.models.base import InputDims, ZSLModel

log = logging.getLogger("avzsl.models.fvaegan")

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """The authors' two-layer blocks: Linear -> LeakyReLU(0.2) -> Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d_out))


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: E[(||∇_x̂ D(x̂, a)||₂ − 1)²] at x̂ = αx + (1 − α)x̃, α ~ U(0, 1) per sample."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed, cond).sum(), mixed, create_graph=True)
    return (grad.norm(2, dim=1) - 1).pow(2).mean()


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, I)), summed over latent dimensions, averaged over the batch."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()


def fit_softmax_classifier(x: torch.Tensor, target: torch.Tensor, n_classes: int, epochs: int, batch_size: int,
                           lr: float, beta1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear softmax classifier (the authors' LINEAR_LOGSOFTMAX) trained with Adam on shuffled mini-batches;
    returns (weight (n_classes, D), bias (n_classes,))."""
    clf = nn.Linear(x.shape[1], n_classes).to(device=x.device, dtype=x.dtype)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, betas=(beta1, 0.999))
    for _ in range(epochs):
        order = torch.randperm(len(x), device=x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(clf(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.weight.detach(), clf.bias.detach()


def column_of(labels: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Position of every label in ``class_ids``."""
    return (labels[:, None] == class_ids[None, :]).to(torch.int8).argmax(1)


@register
class FVAEGAN(ZSLModel):
    name = "fvaegan"
    display_name = "f-VAEGAN-D2"
    family = "ZSL"
    paper = "Xian et al., f-VAEGAN-D2: A Feature Generating Framework for Any-Shot Learning, CVPR 2019"
    hparams = {
        "hidden_dim": 4096,  # hidden units of the encoder, generator and critic (ngh = ndh)
        "latent_dim": None,  # nz; None: the text dimension, as the authors (nz = attribute size)
        "critic_iter": 5,  # critic updates per generator update
        "lambda_gp": 10.0,  # gradient-penalty weight λ
        "gamma_d": 10.0,  # weight of the critic's WGAN loss
        "gamma_g": 10.0,  # weight γ of the generator's WGAN loss against the VAE loss
        "encoded_noise": True,  # training fakes from z ~ q(z|x, a) (VAE-GAN); False: z ~ N(0, I)
        "beta1": 0.5,  # Adam β1 of the generator/encoder and critic optimisers
        "syn_num": 1000,  # synthetic features per unseen class for the final classifier
        "real_per_class": 200,  # real training features kept per seen class for the final classifier
        "cls_epochs": 25,  # epochs of the final softmax classifier
        "cls_batch_size": 1000,
        "cls_lr": 1.0e-3,
        "cls_beta1": 0.5,
    }
    needs_negatives = False
    calibrated_stacking = False  # the benchmark evaluates f-VAEGAN-D2 without calibrated stacking
    eval_modes = ("classifier",)
    primary_mode = "classifier"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        d, k, h = dims.video + dims.audio, dims.text, hp["hidden_dim"]
        self.feature_dim = d
        self.latent_dim = hp["latent_dim"] or k
        self.encoder = mlp(d + k, h, 2 * self.latent_dim)  # E(x, a) -> (μ, log σ²)
        self.generator = mlp(self.latent_dim + k, h, d)  # G(z, a), logits of the [0, 1]-scaled feature
        self.critic = mlp(d + k, h, 1)  # D1(x, a)
        # per-dimension range of the training features seen so far (min-max scaling into the sigmoid's range)
        self.register_buffer("feat_min", torch.full((d,), float("inf")))
        self.register_buffer("feat_max", torch.full((d,), float("-inf")))
        # memory of real training features for the final classifier (saved through get/set_extra_state)
        self.bank = torch.zeros(0, hp["real_per_class"] + 1, d)  # (classes, slots + 1 discard slot, D), raw
        self.bank_classes = torch.zeros(0, dtype=torch.long)
        self.bank_writes = torch.zeros(0, dtype=torch.long)
        self.steps = 0  # critic updates so far; a generator update follows every critic_iter-th
        self.last_generator_losses: dict[str, torch.Tensor] = {}
        self.classifier: dict[str, torch.Tensor] | None = None

    # ---- the networks
    def features(self, batch: Batch) -> torch.Tensor:
        """The "image feature": video and audio means concatenated (video first, as the bilinear baselines)."""
        return torch.cat([batch.video, batch.audio], dim=1)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        span = self.feat_max - self.feat_min
        return (x - self.feat_min) / torch.where(span > 0, span, torch.ones_like(span))

    def encode(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, a], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def generator_logits(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.generator(torch.cat([z, a], dim=1))

    def discriminate(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([x, a], dim=1)).squeeze(1)

    def latent(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """z for a training fake: a reparameterised sample of q(z|x, a), or of the prior."""
        if self.hp["encoded_noise"]:
            mu, logvar = self.encode(x, a)
            return mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return torch.randn(x.shape[0], self.latent_dim, device=x.device, dtype=x.dtype)

    # ---- training
    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        super().set_training_classes(class_ids, class_text)
        self.train_column = torch.full((int(class_ids.max()) + 1,), -1, dtype=torch.long, device=class_ids.device)
        self.train_column[class_ids] = torch.arange(len(class_ids), device=class_ids.device)
        same = len(self.bank_classes) == len(class_ids) and torch.equal(self.bank_classes.cpu(), class_ids.cpu())
        if not same:  # a new training set; a memory loaded from a checkpoint of this training set is kept
            dev = self.feat_min.device
            self.bank = torch.zeros(len(class_ids), self.hp["real_per_class"] + 1, self.feature_dim, device=dev)
            self.bank_classes = class_ids.to(dev).clone()
            self.bank_writes = torch.zeros(len(class_ids), dtype=torch.long, device=dev)

    def remember(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Write the batch's raw features into each class's ring of ``real_per_class`` slots.

        Only the last ``real_per_class`` samples of a class in the batch can be kept; the others are written to the
        extra discard slot, so that no two kept samples hit one slot (index_put with unique indices is
        deterministic) and no data-dependent shapes are needed."""
        slots = self.hp["real_per_class"]
        col = self.train_column[labels]
        counts = torch.bincount(col, minlength=len(self.bank_classes))
        order = torch.argsort(col, stable=True)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(col)
        rank[order] = torch.arange(len(col), device=col.device) - first[col[order]]
        kept = rank >= counts[col] - slots  # consecutive write numbers, hence distinct slots modulo ``slots``
        slot = torch.where(kept, (self.bank_writes[col] + rank) % slots, torch.full_like(rank, slots))
        self.bank[col, slot] = x.detach().to(self.bank.dtype)
        self.bank_writes += counts

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        betas = (self.hp["beta1"], 0.999)
        vae = list(self.encoder.parameters()) + list(self.generator.parameters())
        return [torch.optim.Adam(vae, lr=lr, betas=betas, weight_decay=weight_decay),
                torch.optim.Adam(self.critic.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)]

    def critic_step(self, x: torch.Tensor, a: torch.Tensor, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """max_D E[D(x, a)] − E[D(x̃, a)] − λ GP, as the minimisation of γ_D (E[D(x̃)] − E[D(x)] + λ GP)."""
        with torch.no_grad():
            fake = torch.sigmoid(self.generator_logits(self.latent(x, a), a))
        d_real, d_fake = self.discriminate(x, a).mean(), self.discriminate(fake, a).mean()
        gp = gradient_penalty(self.discriminate, x, fake, a)
        loss = self.hp["gamma_d"] * (d_fake - d_real + self.hp["lambda_gp"] * gp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"critic": loss.detach(), "wasserstein": (d_real - d_fake).detach(), "gp": gp.detach()}

    def generator_step(self, x: torch.Tensor, a: torch.Tensor, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """min_{E,G} L_VAE + γ_G (−E[D(x̃, a)]), L_VAE = KL(q(z|x,a) || N(0,I)) + BCE(G(z, a), x)."""
        mu, logvar = self.encode(x, a)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.generator_logits(z, a)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kld = kl_to_standard_normal(mu, logvar)
        fake = torch.sigmoid(logits) if self.hp["encoded_noise"] else \
            torch.sigmoid(self.generator_logits(torch.randn_like(z), a))
        self.critic.requires_grad_(False)
        adversarial = -self.discriminate(fake, a).mean()
        self.critic.requires_grad_(True)
        loss = rec + kld + self.hp["gamma_g"] * adversarial
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "rec": rec.detach(), "kld": kld.detach(), "g_adv": adversarial.detach()}

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One critic update per batch (each critic update sees fresh real features, as the authors' loop samples a
        new batch per critic iteration) and a generator update after every ``critic_iter``-th."""
        opt_vae, opt_critic = optimizers
        raw = self.features(batch)
        self.remember(raw, batch.label)
        self.feat_min.copy_(torch.minimum(self.feat_min, raw.min(0).values))
        self.feat_max.copy_(torch.maximum(self.feat_max, raw.max(0).values))
        x, a = self.scale(raw), batch.text
        logs = self.critic_step(x, a, opt_critic)
        self.steps += 1
        if self.steps % self.hp["critic_iter"] == 0:
            self.last_generator_losses = self.generator_step(x, a, opt_vae)
        elif not self.last_generator_losses:  # before the first generator update
            self.last_generator_losses = {k: torch.zeros((), device=x.device) for k in ("loss", "rec", "kld", "g_adv")}
        return {**self.last_generator_losses, **logs}

    # ---- evaluation
    @torch.no_grad()
    def synthesise(self, class_text: torch.Tensor, n_per_class: int, chunk: int = 8192) -> torch.Tensor:
        """(len(class_text) * n_per_class, D) features from z ~ N(0, I), class-major order, in the scaled space."""
        a = class_text.repeat_interleave(n_per_class, dim=0)
        z = torch.randn(a.shape[0], self.latent_dim, device=a.device, dtype=a.dtype)
        parts = [torch.sigmoid(self.generator_logits(z[s:s + chunk], a[s:s + chunk])) for s in range(0, len(a), chunk)]
        return torch.cat(parts) if parts else a.new_zeros(0, self.feature_dim)

    def real_features(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remembered real training features of ``classes`` (scaled) and their class ids."""
        slots = self.hp["real_per_class"]
        rows = torch.isin(self.bank_classes, classes)
        filled = torch.arange(slots, device=self.bank.device)[None] < self.bank_writes[rows, None].clamp(max=slots)
        x = self.bank[rows, :slots][filled]
        y = self.bank_classes[rows, None].expand(-1, slots)[filled]
        return self.scale(x), y

    def classifier_training_set(self, class_ids: list[int], class_text: torch.Tensor, seen: list[int],
                                unseen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Real features of the split's seen classes and ``syn_num`` synthetic features of each unseen class, with
        their global class ids."""
        dev = class_text.device
        ids = torch.as_tensor(class_ids, device=dev)
        seen_t, unseen_t = torch.as_tensor(seen, device=dev), torch.as_tensor(unseen, device=dev)
        missing = sorted(set(seen) - set(self.bank_classes[self.bank_writes > 0].tolist()))
        if missing:
            log.warning("no remembered training features for seen classes %s: they get no classifier samples",
                        missing)
        real_x, real_y = self.real_features(seen_t)
        syn_x = self.synthesise(class_text[column_of(unseen_t, ids)], self.hp["syn_num"])
        syn_y = unseen_t.repeat_interleave(self.hp["syn_num"])
        return torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y])

    def prepare_evaluation(self, class_ids: list[int], class_text: torch.Tensor, seen: list[int],
                           unseen: list[int]) -> None:
        x, y = self.classifier_training_set(class_ids, class_text, seen, unseen)
        ids = torch.as_tensor(class_ids, device=class_text.device)
        hp = self.hp
        with torch.enable_grad():  # the engine evaluates under no_grad
            weight, bias = fit_softmax_classifier(x, column_of(y, ids), len(class_ids), hp["cls_epochs"],
                                                  hp["cls_batch_size"], hp["cls_lr"], hp["cls_beta1"])
        self.classifier = {"weight": weight, "bias": bias, "text": class_text}

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"classifier": self.scale(self.features(batch))}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.classifier is None or not torch.equal(self.classifier["text"], text):
            raise RuntimeError("f-VAEGAN-D2 classifies with the classifier of prepare_evaluation: call it with "
                               "these classes first")
        return {"weight": self.classifier["weight"], "bias": self.classifier["bias"]}

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = videos["classifier"] @ classes["weight"].T + classes["bias"]
        return {"classifier": -F.log_softmax(logits, dim=1)}

    # ---- the real-feature memory, the step counter and the logged generator losses travel with the state dict
    def get_extra_state(self) -> dict:
        return {"bank": self.bank, "bank_classes": self.bank_classes, "bank_writes": self.bank_writes,
                "steps": self.steps, "last_generator_losses": self.last_generator_losses}

    def set_extra_state(self, state: dict) -> None:
        dev = self.feat_min.device
        self.bank = state["bank"].to(dev)
        self.bank_classes = state["bank_classes"].to(dev)
        self.bank_writes = state["bank_writes"].to(dev)
        self.steps = int(state["steps"])
        self.last_generator_losses = {k: v.to(dev) for k, v in state["last_generator_losses"].items()}
