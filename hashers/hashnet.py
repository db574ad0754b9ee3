"""HashNet: deep learning to hash by continuation (see :class:`HashNet`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hashers import functional
from hashers.base import HashingMethod, HeadSpec, check_config_types


@dataclass(frozen=True, kw_only=True)
class HashNetConfig:
    alpha: float | None = None  # adaptive sigmoid θ = α⟨h_i, h_j⟩; None = 10 / n_bits (paper)
    beta0: float = 1.0  # initial scale of tanh(β z) (authors' code: init_scale 1)
    gamma: float = 0.005  # continuation rate per iteration of the authors' run (their gamma)
    power: float = 0.5  # continuation exponent (authors' code: power 0.5)
    iterations: int = 10000  # length of the authors' run, mapped onto the whole training budget
    balance_pairs: bool = True  # weighted maximum likelihood, w = |S|/|S1| or |S|/|S0| (paper)

    def __post_init__(self) -> None:
        # library use (params.yaml refuses these already): NaN / inf gave a non-finite loss
        # blamed on train.lr, and balance_pairs="false" was truthy
        check_config_types(
            self,
            finite=("beta0", "gamma", "power") + (() if self.alpha is None else ("alpha",)),
            integers=("iterations",),
            flags=("balance_pairs",),
        )
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha: {self.alpha} must be > 0 (or null for 10 / n_bits)")
        if self.beta0 <= 0:
            raise ValueError(f"beta0: {self.beta0} must be > 0")
        if self.gamma < 0:
            raise ValueError(f"gamma: {self.gamma} must be >= 0")
        if self.power < 0:
            raise ValueError(f"power: {self.power} must be >= 0")
        if self.iterations < 1:
            raise ValueError(f"iterations: {self.iterations} must be >= 1")


class HashNet(HashingMethod):
    """HashNet: Deep Learning to Hash by Continuation.

    Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017.

    The hash layer outputs ``h = tanh(β z)`` with ``z`` the head's linear output; ``β`` grows during
    training (continuation), so ``tanh(β z)`` approaches ``sign(z)`` and the network learns
    the binary codes it will be evaluated with. Loss: weighted maximum likelihood
    ``Σ_ij w_ij [softplus(θ_ij) - S_ij θ_ij]`` with the adaptive sigmoid ``θ_ij = α ⟨h_i, h_j⟩`` and
    class-balance weights ``w_ij = |S|/|S1|`` (similar) or ``|S|/|S0|`` (dissimilar). There is no
    quantisation term: continuation replaces it. Binary codes are ``z > 0`` (= ``h > 0``).

    Convention: ``θ = α ⟨h_i, h_j⟩`` is the *full* inner product scaled by ``α``, not the ``½``
    convention of DPSH/DSDH (DHN's default is the plain inner product, ``logit_scale = 1``);
    ``α = 10 / K`` for ``K`` bits (the setting of the authors' PyTorch training
    script, ``sigmoid_param = 10 / hash_bit``) bounds ``|θ| ≤ 10`` because ``|h| ≤ 1``, i.e.
    ``½``-convention ``α' = 2α``.

    Continuation schedule: the authors' released code sets ``β_t = β0 (1 + γ t)^power`` at
    iteration ``t`` of a run of ``T`` iterations, with ``β0 = 1``, ``γ = 0.005``, ``power = 0.5``
    and ``T = 10 000`` (github.com/thuml/HashNet: the Caffe ``ScaleTanH`` layer's
    ``scale_tanh_param {init_scale: 1.0 step_size: 200 gamma: 0.005 power: 0.5}`` in
    ``models/train/imagenet/train_val.prototxt`` (commit 239484f) with ``max_iter: 10000`` in its
    ``solver.prototxt`` (5d53971); the PyTorch ``pytorch/src/network.py`` (48652bf),
    ``init_scale = 1.0``, ``step_size = 200``, ``gamma = 0.005``, ``power = 0.5``, with
    ``num_iterations = 10000`` in ``pytorch/src/train.py`` (48652bf); both set
    ``β = init_scale · (1 + gamma · t)^power`` every ``step_size = 200`` iterations), so ``β`` ends at
    ``(1 + 0.005 · 10 000)^0.5 = √51 ≈ 7.14``. Here the authors' run is mapped onto the whole
    training budget: at the start of epoch ``e`` of ``E`` (``n_epochs``, the trainer's budget,
    already capped by ``train.max_steps``)::

        β_e = β0 · (1 + γ · T · e / (E - 1))^power      (β_e = β0 when E = 1)

    so the first epoch trains at ``β0`` and the last at ``β0 (1 + γT)^power`` (√51 ≈ 7.14 with
    the defaults) whatever the number of epochs: a 3-epoch budget (PathMNIST at
    ``max_steps: 1200``) runs ``1, √26 ≈ 5.10, √51``, a 60-epoch one ``√(1 + 50 e / 59)``,
    e.g. ≈ 5.14 at ``e = 30`` (until 2026-11-27 the schedule was ``β0 (1 + e)^0.5`` per epoch,
    ≈ 5.57 at ``e = 30`` and ≈ 7.7 at ``e = 59``, but only ``√3 ≈ 1.73`` at the end of a 3-epoch
    budget). An early stop ends the schedule before its end value. ``β`` is a buffer and
    round-trips with the saved state.

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
    - the continuation schedule is per epoch (above), since the trainer's hook is per epoch:
      ``β`` steps once per epoch along the authors' curve (their steps are every 200
      iterations), which is coarse when the budget holds only a few epochs.
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

    def beta_at(self, epoch: int, n_epochs: int) -> float:
        """``β`` for epoch ``epoch`` of ``n_epochs`` (the class docstring's schedule)."""
        c = self.config
        progress = epoch / (n_epochs - 1) if n_epochs > 1 else 0.0
        return c.beta0 * (1.0 + c.gamma * c.iterations * progress) ** c.power

    def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
        self.beta.fill_(self.beta_at(epoch, n_epochs))

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        S = functional.label_similarity(y)
        theta = self.alpha * (u @ u.T)
        weights = functional.balanced_pair_weights(S) if self.config.balance_pairs else None
        likelihood = functional.pairwise_likelihood_loss(theta, S, weights)
        return {"loss": likelihood, "likelihood": likelihood}
