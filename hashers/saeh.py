"""SAEH: supervised auto-encoder hashing (see :class:`SAEH`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hashers import functional
from hashers.base import Batch, HashingError, HashingMethod, HeadSpec


@dataclass(frozen=True, kw_only=True)
class SAEHConfig:
    lambda_sim: float = 1.0  # λ1: weight of the pairwise similarity (likelihood) loss
    lambda_rec: float = 1.0  # λ2: weight of the reconstruction loss (per-element mean scale)
    normalize_target: bool = True  # reconstruct layer_norm(x) (true) or the raw embedding x

    def __post_init__(self) -> None:
        if self.lambda_sim < 0:
            raise ValueError(f"lambda_sim: {self.lambda_sim} must be >= 0")
        if self.lambda_rec < 0:
            raise ValueError(f"lambda_rec: {self.lambda_rec} must be >= 0")


class SAEH(HashingMethod):
    """SAEH: supervised auto-encoder hashing over frozen embeddings.

    The supervised auto-encoder formulation is Le, Patterson & White, "Supervised autoencoders:
    Improving generalization performance with unsupervised regularizers", NeurIPS 2018: a shared
    representation trained for the supervised task with a reconstruction loss as regulariser. Its
    use as a hashing method (the bottleneck is the relaxed code) is the thesis' adaptation
    (§3.2.3), not a published hashing paper's exact recipe.

    Encoder: the MLP head, ``u = tanh(head(x))``. Decoder: an MLP mirroring the head's hidden
    widths, ``x̂ = dec(u)``. Loss::

        L = CE(W u + b, y) + λ1 · L_sim(u, S) + λ2 · (1 / (B·D)) Σ_i ‖x̂_i - t(x_i)‖²

    (``B`` rows, ``D`` embedding features: ``F.mse_loss``, the mean over rows *and* features, so
    the reconstruction term is a per-element squared error and ``λ2`` weighs it on that scale,
    independent of ``D``; with the default layer-normalised target an all-zero reconstruction
    scores ≈ 1). ``λ2 = 1`` is our default on this scale, not a value taken from Le et al.
    (their weighting of the reconstruction error was not verified here). ``L_sim`` is the
    pairwise likelihood of DPSH (:func:`hashers.functional.pairwise_likelihood_loss` on
    ``Θ = ½ u uᵀ``, ``S`` from :func:`hashers.functional.label_similarity`) and
    ``t(x) = layer_norm(s(x))`` (no affine; ``normalize_target``) so the
    reconstruction has the same scale for every backbone, or ``t(x) = s(x)``. ``s`` is the head's
    per-feature input standardiser (``train.standardize``; the identity without it), so the decoder
    rebuilds what the head reads: a target of the raw embedding would be dominated by an offset
    shared by every row, which the decoder's bias fits alone (the standardiser exists because of
    such offsets; ``hashers/heads.py``).

    Where ``x`` comes from: :meth:`batch_loss` computes every term from ``batch.x`` through
    :meth:`loss_terms`. :meth:`compute_loss` receives only ``u``; it takes the reconstruction target
    from the input of the last :meth:`forward` call, which ``forward`` keeps in a plain attribute
    (not a buffer: never saved, never moved with the module), and refuses a ``u`` whose batch size
    does not match that input.

    Deviations for frozen embeddings, stated as the brief asks:
    - the auto-encoder reconstructs the frozen embedding (layer-normalised by default), not an
      image; encoder and decoder are MLPs (LayerNorm, no BatchNorm);
    - the supervised part combines a softmax classifier on the codes (multi-hot rows use the target
      distribution ``y / Σy``) with the pairwise similarity loss, both means over the batch.

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``); the
    loss itself is not re-weighted, so it keeps its paper form.
    """

    name = "saeh"
    Config = SAEHConfig
    per_sample_loss = False  # the pairwise similarity loss couples every pair in the batch

    def __init__(self, spec: HeadSpec, config: SAEHConfig | None = None) -> None:
        super().__init__(spec, config)
        self.classifier = nn.Linear(spec.n_bits, spec.n_classes)
        hidden = tuple(reversed(spec.hidden_dims))
        decoder: list[nn.Module] = []
        prev = spec.n_bits
        for width in hidden:
            decoder += [nn.Linear(prev, width), nn.GELU()]
            prev = width
        decoder.append(nn.Linear(prev, spec.in_dim))
        self.decoder = nn.Sequential(*decoder)
        self._last_input: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self._last_input = x.detach()
        return torch.tanh(self.head(x))

    def reconstruction_target(self, x: Tensor) -> Tensor:
        """What the decoder rebuilds from the code: the head's input as its LayerNorm reads it,
        ``layer_norm(s(x))`` (or ``s(x)`` without ``normalize_target``), with ``s`` the head's
        input standardiser (the identity when ``standardize`` is off)."""
        z = self.head.standardized(x)
        return F.layer_norm(z, z.shape[-1:]) if self.config.normalize_target else z

    def loss_terms(self, u: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        """All loss terms from codes ``u``, labels ``y`` and the embeddings ``x`` they encode."""
        classification = functional.soft_label_cross_entropy(self.classifier(u), y)
        similarity = functional.pairwise_likelihood_loss(
            functional.inner_product_logits(u), functional.label_similarity(y)
        )
        reconstruction = F.mse_loss(self.decoder(u), self.reconstruction_target(x.detach()))
        c = self.config
        loss = classification + c.lambda_sim * similarity + c.lambda_rec * reconstruction
        return {
            "loss": loss,
            "classification": classification,
            "similarity": similarity,
            "reconstruction": reconstruction,
        }

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        x = self._last_input
        if x is None or x.shape[0] != u.shape[0]:
            got = "no forward call yet" if x is None else f"the last forward saw {x.shape[0]} rows"
            raise HashingError(
                f"saeh: compute_loss reconstructs the embeddings of the last forward call, but "
                f"{got} and u has {u.shape[0]}; call method(x) first or use loss_terms(u, y, x)"
            )
        return self.loss_terms(u, y, x)

    def batch_loss(self, batch: Batch) -> dict[str, Tensor]:
        u = self(batch.x)
        return self.with_geometry(self.loss_terms(u, batch.y, batch.x), u, batch.x)
