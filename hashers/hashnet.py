"""HashNet: deep learning to hash by continuation (see :class:`HashNet`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hashers import functional
from hashers.base import HashingMethod, HeadSpec


@dataclass(frozen=True, kw_only=True)
class HashNetConfig:
    alpha: float | None = None  # adaptive sigmoid θ = α⟨h_i, h_j⟩; None = 10 / n_bits (paper)
    beta0: float = 1.0  # initial scale of tanh(β z) (paper: 1)
    gamma: float = 1.0  # continuation rate per epoch: β_e = β0 (1 + γ e)^power
    power: float = 0.5  # continuation exponent (paper: 0.5)
    balance_pairs: bool = True  # weighted maximum likelihood, w = |S|/|S1| or |S|/|S0| (paper)

    def __post_init__(self) -> None:
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha: {self.alpha} must be > 0 (or null for 10 / n_bits)")
        if self.beta0 <= 0:
            raise ValueError(f"beta0: {self.beta0} must be > 0")
        if self.gamma < 0:
            raise ValueError(f"gamma: {self.gamma} must be >= 0")
        if self.power < 0:
            raise ValueError(f"power: {self.power} must be >= 0")


class HashNet(HashingMethod):
    """HashNet: Deep Learning to Hash by Continuation.

    Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017.

    The hash layer outputs ``h = tanh(β z)`` with ``z`` the head's linear output; ``β`` grows during
    training (continuation), so ``tanh(β z)`` approaches ``sign(z)`` and the network learns
    the binary codes it will be evaluated with. Loss: weighted maximum likelihood
    ``Σ_ij w_ij [softplus(θ_ij) - S_ij θ_ij]`` with the adaptive sigmoid ``θ_ij = α ⟨h_i, h_j⟩`` and
    class-balance weights ``w_ij = |S|/|S1|`` (similar) or ``|S|/|S0|`` (dissimilar). There is no
    quantisation term: continuation replaces it. Binary codes are ``z > 0`` (= ``h > 0``).

    Convention: ``θ = α ⟨h_i, h_j⟩`` is the *full* inner product, not the ``½`` convention of
    DPSH/DHN/DSDH; ``α = 10 / K`` for ``K`` bits (the setting of the authors' PyTorch training
    script, ``sigmoid_param = 10 / hash_bit``) bounds ``|θ| ≤ 10`` because ``|h| ≤ 1``, i.e.
    ``½``-convention ``α' = 2α``.

    Continuation schedule: ``β_e = β0 (1 + γ e)^power`` at the start of epoch ``e`` (the authors'
    per-iteration ``β_t = (1 + 0.005 t)^0.5``, updated every 200 iterations, re-expressed per
    epoch: with ``γ = 1`` the scale reaches ≈ 5.5 after 30 epochs and ≈ 7.7 after 60, the range
    the paper's 10 000 iterations reach). ``β`` is a buffer and round-trips with the saved state.

    Where ``α`` enters: here ``θ = α⟨h_i, h_j⟩`` enters both terms of the likelihood
    (``softplus(θ) - S θ``: a proper negative log-likelihood, ``≥ 0``, computed with softplus),
    as in the paper. The authors' repository (github.com/thuml/HashNet, ``pytorch/src/loss.py``)
    has had both forms: an early commit of its PyTorch code (48652bf) scaled the inner product by ``α``
    inside ``log(1 + e^{α⟨·⟩})`` only and not in the ``S⟨·⟩`` term — for ``α < 1`` that
    "likelihood" is unbounded below, since a similar pair's gradient ``α σ(α⟨·⟩) - 1`` never
    vanishes — while its later history (e.g. commit 9d87b6f) scales the inner product before both terms and
    adds a class-weighted variant without ``α``. So "the authors' released loss" is not one
    formula; nothing here attributes any published result to the early variant. The tests
    check that the loss stays non-negative and that 16-bit codes on imbalanced clusters do not
    collapse.

    Class imbalance: the class-balance pair weights above are the paper's; class-balanced batch
    sampling (``hashers.trainer.ClassBalancedBatches``, ``train.class_balance``) is available on
    top and leaves the loss in its paper form.

    Deviations for frozen embeddings:
    - the paper's AlexNet is replaced by an MLP head over the frozen embedding
      (``hashers.heads.MLPHead``), followed by ``tanh(β ·)``;
    - pairs are all ordered pairs inside each mini-batch (diagonal included, as in DPSH); the loss is
      the weighted mean (``hashers.functional.balanced_pair_weights``, normalised to mean 1) instead
      of the weighted sum; the pair weights are the class-balance weights only (the paper's
      continuous multi-label similarity ``c_ij`` is not used);
    - the continuation schedule is per epoch (above), since the trainer's unit of progress is the
      epoch and the per-iteration count depends on the dataset size.
    """

    name = "hashnet"
    Config = HashNetConfig
    per_sample_loss = False  # the likelihood couples every pair in the batch

    def __init__(self, spec: HeadSpec, config: HashNetConfig | None = None) -> None:
        super().__init__(spec, config)
        self.register_buffer("beta", torch.tensor(float(self.config.beta0)))

    @property
    def alpha(self) -> float:
        a = self.config.alpha
        return 10.0 / self.spec.n_bits if a is None else a

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.beta * self.head(x))

    def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
        c = self.config
        self.beta.fill_(c.beta0 * (1.0 + c.gamma * epoch) ** c.power)

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        S = functional.label_similarity(y)
        theta = self.alpha * (u @ u.T)
        weights = functional.balanced_pair_weights(S) if self.config.balance_pairs else None
        likelihood = functional.pairwise_likelihood_loss(theta, S, weights)
        return {"loss": likelihood, "likelihood": likelihood}
