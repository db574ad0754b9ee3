"""DSH-GAN: deep semantic hashing with generative adversarial networks (see :class:`DSHGAN`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hashers import functional
from hashers.base import (
    Batch,
    EmbeddingSet,
    HashingMethod,
    HeadSpec,
    check_config_types,
)


@dataclass(frozen=True, kw_only=True)
class DSHGANConfig:
    margin: float = (
        1.0  # ranking margin on [0, 1] codes (DNNH's loss, which DSH-GAN's hash stream uses)
    )
    real_triplet_weight: float = 1.0  # in-batch real triplets (ours; 0 = synthetic triplets only)
    cls_weight: float = 1.0  # classification stream on the codes
    triplets_per_anchor: int = 4  # real in-batch triplets sampled per batch sample
    noise_dim: int = 64  # generator noise z
    gan_hidden: int = 512  # hidden width of generator and discriminator
    gan_lr: float = 2e-4  # Adam learning rate of generator and discriminator
    gan_beta1: float = 0.5  # Adam beta1 of generator and discriminator (DCGAN's setting)

    def __post_init__(self) -> None:
        # library use (params.yaml refuses these already): NaN / inf gave a non-finite loss
        # blamed on train.lr, and noise_dim=2.5 failed inside torch
        check_config_types(
            self,
            finite=("margin", "real_triplet_weight", "cls_weight", "gan_lr", "gan_beta1"),
            integers=("triplets_per_anchor", "noise_dim", "gan_hidden"),
        )
        if self.margin <= 0:
            raise ValueError(f"margin: {self.margin} must be > 0")
        for field in ("real_triplet_weight", "cls_weight"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field}: {getattr(self, field)} must be >= 0")
        for field in ("triplets_per_anchor", "noise_dim", "gan_hidden"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}: {getattr(self, field)} must be >= 1")
        if self.gan_lr <= 0:
            raise ValueError(f"gan_lr: {self.gan_lr} must be > 0")
        if not 0 <= self.gan_beta1 < 1:
            raise ValueError(f"gan_beta1: {self.gan_beta1} must be in [0, 1)")


class EmbeddingGenerator(nn.Module):
    """``G(z, y)``: noise and a (multi-hot) label vector -> a layer-normalised synthetic embedding."""

    def __init__(self, *, noise_dim: int, n_classes: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.net = nn.Sequential(
            nn.Linear(noise_dim + n_classes, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        out = self.net(torch.cat([z, y], dim=1))
        return F.layer_norm(out, out.shape[-1:])


class EmbeddingDiscriminator(nn.Module):
    """``D(e)`` -> (real-vs-synthetic logit ``[B]``, class logits ``[B, C]``) on normalised embeddings."""

    def __init__(self, *, in_dim: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
        )
        self.adversarial = nn.Linear(hidden, 1)
        self.classes = nn.Linear(hidden, n_classes)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(e)
        return self.adversarial(h).squeeze(1), self.classes(h)


class DSHGAN(HashingMethod):
    """DSH-GAN: hashing with a label-conditioned generator of triplet partners.

    Qiu, Pan, Yao & Mei, "Deep Semantic Hashing with Generative Adversarial Networks", SIGIR 2017.

    Parts (all submodules, so they round-trip in the saved state):
    - generator ``G(z, y)``: synthesises an embedding of label ``y`` from noise ``z``;
    - discriminator stream ``D``: real vs synthetic, plus class prediction (AC-GAN style);
    - hash stream (the head): ``u = 2σ(head(x)) - 1``, codes ``b = (u + 1) / 2 ∈ [0, 1]``, trained
      with the triplet ranking loss ``max(0, m - (‖b_q - b_-‖² - ‖b_q - b_+‖²))`` on triplets of a
      real anchor, a synthetic positive ``G(z, y_q)`` and a synthetic negative ``G(z', c)`` of a
      class ``c`` the anchor does not hold (an anchor without any label gets the positive
      ``G(z, 0)``, conditioned on the empty label set, and a negative of any class, as
      :func:`hashers.functional.label_similarity` makes unlabelled samples similar to each other
      and dissimilar to every labelled one);
    - classification stream: a linear softmax classifier on ``u``.

    Alternating updates (:meth:`training_step`): one discriminator step, one generator step, then
    one step of head + classifier on the hash and classification losses, with the synthetic
    partners fixed (drawn under ``no_grad``). G and D have their own Adam optimisers (``gan_lr``,
    ``gan_beta1``), created lazily at the first step of a fit; their gradients are computed with
    ``torch.autograd.grad`` on their own parameters only and cleared after their step, so when the
    trainer's optimiser (built over all parameters) steps, G and D hold no gradient and are skipped
    (no double step, no weight decay applied to them). :meth:`compute_loss` is the hash stream
    alone for the current G (noise from torch's global generator, so seeding makes it repeatable).

    Deviations for frozen embeddings, stated as the brief asks:
    - the generator synthesises embeddings, not images, in the space the head's input LayerNorm
      reads: it outputs layer-normalised vectors, the discriminator compares them with
      ``layer_norm(standardize(x))`` of real embeddings (:meth:`discriminator_view`; the head's
      fixed per-feature standardisation, ``train.standardize``, identity when off), and synthetic
      partners enter the head after its standardiser (:meth:`encode_synthetic`), so real and
      synthetic inputs reach the head's LayerNorm alike. (Until 2026-11-27 D read
      ``layer_norm(x)`` of the raw embeddings and the partners went through the standardiser as
      if they were raw embeddings: with standardisation on, they reached the head shifted and
      rescaled per feature, off the distribution of the real inputs.) G, D and the head are MLPs,
      and D does not share a trunk with the hash stream (the paper's streams share one CNN) so
      the head stays a plain MLP;
    - the classification stream reads the relaxed codes ``u``;
    - next to the synthetic triplets, the hash stream also uses in-batch triplets of real samples
      mined from the labels (``real_triplet_weight``, ours): an untrained generator gives the
      hash stream no useful partners early on, and real triplets give it a signal from the start;
    - the margin is DNNH's (1 on [0, 1] codes) and all losses are batch means.

    ``per_sample_loss = False``: the real triplets couple samples, and in any case the
    discriminator learns from the raw real records outside the trainer's (clippable) optimiser.

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``); the
    loss itself is not re-weighted, so it keeps its paper form.
    """

    name = "dshgan"
    Config = DSHGANConfig
    per_sample_loss = False

    def __init__(self, spec: HeadSpec, config: DSHGANConfig | None = None) -> None:
        super().__init__(spec, config)
        c = self.config
        self.classifier = nn.Linear(spec.n_bits, spec.n_classes)
        self.generator = EmbeddingGenerator(
            noise_dim=c.noise_dim,
            n_classes=spec.n_classes,
            out_dim=spec.in_dim,
            hidden=c.gan_hidden,
        )
        self.discriminator = EmbeddingDiscriminator(
            in_dim=spec.in_dim, n_classes=spec.n_classes, hidden=c.gan_hidden
        )
        self._gan_optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer] | None = None

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(0.5 * self.head(x))  # = 2σ(a) - 1

    def encode_synthetic(self, z: Tensor) -> Tensor:
        """Relaxed codes of synthetic embeddings, which live where the head's LayerNorm reads
        (after its input standardisation), so they skip the standardiser."""
        return torch.tanh(0.5 * self.head.from_standardized(z))

    def discriminator_view(self, x: Tensor) -> Tensor:
        """What the discriminator (and so the generator) sees of real embeddings:
        ``layer_norm(standardize(x))``, the input of the head's LayerNorm, per-sample normalised."""
        z = self.head.standardized(x)
        return F.layer_norm(z, z.shape[-1:])

    # ---- synthesis ---------------------------------------------------------------------------
    def noise(self, n: int, like: Tensor) -> Tensor:
        return torch.randn(n, self.config.noise_dim, device=like.device, dtype=like.dtype)

    def synthesise_partners(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Synthetic positives ``G(z, y_i)``, negatives ``G(z', c_i)`` and the rows that have a negative."""
        b, n_classes = y.shape
        absent = (y <= 0).to(y.dtype)
        has_neg = absent.sum(dim=1) > 0
        weights = torch.where(has_neg.unsqueeze(1), absent, torch.ones_like(absent))
        neg_class = torch.multinomial(weights, 1).squeeze(1)
        y_neg = F.one_hot(neg_class, n_classes).to(y.dtype)
        fake = self.generator(self.noise(2 * b, y), torch.cat([y, y_neg]))
        return fake[:b], fake[b:], has_neg

    # ---- the hash stream -------------------------------------------------------------------
    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        c = self.config
        n = u.shape[0]
        with torch.no_grad():
            pos, neg, keep = self.synthesise_partners(y)
        b = 0.5 * (u + 1.0)
        b_syn = 0.5 * (self.encode_synthetic(torch.cat([pos, neg])) + 1.0)
        b_pos, b_neg = b_syn[:n], b_syn[n:]
        synthetic = functional.triplet_ranking_loss(b[keep], b_pos[keep], b_neg[keep], c.margin)
        a, p, q = functional.mine_triplets(y, c.triplets_per_anchor * n)
        real = functional.triplet_ranking_loss(b[a], b[p], b[q], c.margin)
        classification = functional.soft_label_cross_entropy(self.classifier(u), y)
        loss = synthetic + c.real_triplet_weight * real + c.cls_weight * classification
        return {
            "loss": loss,
            "synthetic_triplets": synthetic,
            "real_triplets": real,
            "classification": classification,
        }

    # ---- alternating updates -------------------------------------------------------------
    def on_fit_start(self, train: EmbeddingSet) -> None:
        self._gan_optimizers = None  # fresh G/D optimiser state for every fit

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if self._gan_optimizers is None:
            c = self.config

            def adam(module: nn.Module) -> torch.optim.Optimizer:
                return torch.optim.Adam(
                    module.parameters(), lr=c.gan_lr, betas=(c.gan_beta1, 0.999)
                )

            self._gan_optimizers = (adam(self.generator), adam(self.discriminator))
        return self._gan_optimizers

    @staticmethod
    def _step(module: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """Step ``module`` alone on ``loss``; no other parameter receives a gradient."""
        params = list(module.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def training_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        opt_g, opt_d = self._optimizers()
        x, y = batch.x, batch.y
        n = x.shape[0]
        ones, zeros = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
        real = self.discriminator_view(x)

        # discriminator: real vs synthetic, and the class of real embeddings
        with torch.no_grad():
            fake = self.generator(self.noise(n, x), y)
        adv_real, cls_real = self.discriminator(real)
        adv_fake, _ = self.discriminator(fake)
        d_loss = (
            F.binary_cross_entropy_with_logits(adv_real, ones)
            + F.binary_cross_entropy_with_logits(adv_fake, zeros)
            + functional.soft_label_cross_entropy(cls_real, y)
        )
        self._step(self.discriminator, opt_d, d_loss)

        # generator: fool D and be recognised as the conditioning label
        adv_fake, cls_fake = self.discriminator(self.generator(self.noise(n, x), y))
        g_loss = F.binary_cross_entropy_with_logits(
            adv_fake, ones
        ) + functional.soft_label_cross_entropy(cls_fake, y)
        self._step(self.generator, opt_g, g_loss)

        # hash + classification streams with fixed synthetic partners
        u = self(x)
        terms = self.with_geometry(self.compute_loss(u, y, batch.idx), u, x)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        out = {k: v.detach() for k, v in terms.items()}
        out["discriminator"] = d_loss.detach()
        out["generator"] = g_loss.detach()
        return out
