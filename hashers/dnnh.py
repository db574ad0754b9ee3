"""DNNH: Deep Neural Network Hashing with a divide-and-encode head (see :class:`DNNH`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hashers import functional
from hashers.base import HashingMethod, check_config_types
from hashers.heads import DivideEncodeHead


@dataclass(frozen=True, kw_only=True)
class DNNHConfig:
    margin: float = 1.0  # ranking margin in bits of squared distance on [0, 1] codes (paper: 1)
    epsilon: float = 0.1  # half-width of the pass-through band of the piece-wise threshold
    slice_dim: int = 16  # width of each divide-and-encode slice (ours; the paper's follows its CNN)
    triplets_per_anchor: int = 4  # in-batch triplets sampled per batch sample

    def __post_init__(self) -> None:
        # library use (params.yaml refuses these already): margin NaN / inf gave a non-finite
        # loss blamed on train.lr, and slice_dim=2.5 failed inside torch
        check_config_types(
            self, finite=("margin", "epsilon"), integers=("slice_dim", "triplets_per_anchor")
        )
        if self.margin <= 0:
            raise ValueError(f"margin: {self.margin} must be > 0")
        if not 0 <= self.epsilon < 0.5:
            raise ValueError(f"epsilon: {self.epsilon} must be in [0, 0.5)")
        if self.slice_dim < 1:
            raise ValueError(f"slice_dim: {self.slice_dim} must be >= 1")
        if self.triplets_per_anchor < 1:
            raise ValueError(f"triplets_per_anchor: {self.triplets_per_anchor} must be >= 1")


def piecewise_threshold(s: Tensor, epsilon: float) -> Tensor:
    """DNNH's piece-wise threshold with a straight-through gradient.

    Forward (the paper's piece-wise layer): ``g(s) = 0`` for ``s < 0.5 - ε``, ``s`` for
    ``|s - 0.5| ≤ ε`` and ``1`` for ``s > 0.5 + ε``. Backward: the identity. The exact derivative
    is 0 outside the band, so a unit that snapped to 0 or 1 would never receive a gradient again
    (dead bits); the straight-through estimator keeps every unit trainable while the loss sees the
    snapped values.
    """
    hard = torch.where(s < 0.5 - epsilon, torch.zeros_like(s), s)
    hard = torch.where(s > 0.5 + epsilon, torch.ones_like(s), hard)
    return s + (hard - s).detach()


class DNNH(HashingMethod):
    """DNNH: simultaneous feature learning and hash coding with a triplet ranking loss.

    Lai, Pan, Liu & Yan, "Simultaneous Feature Learning and Hash Coding with Deep Neural Networks",
    CVPR 2015.

    Head: divide-and-encode (:class:`hashers.heads.DivideEncodeHead`): a shared trunk, its feature
    vector split into ``n_bits`` slices, each slice encoded to one sigmoid unit ``s_k``. In training
    the piece-wise threshold layer snaps ``s`` to 0/1 outside ``0.5 ± ε``. Loss (the paper's
    triplet ranking loss) on in-batch triplets ``(q, +, -)``, ``q, +`` similar and ``q, -`` not
    (:func:`hashers.functional.label_similarity`: a shared label, or both without any label)::

        ℓ = max(0, margin - (‖b_q - b_-‖² - ‖b_q - b_+‖²)),   b = codes in [0, 1].

    ``forward`` returns ``u = 2b - 1`` in ``[-1, 1]`` so that the shared ``encode`` (``u > 0``)
    gives the paper's bit ``b > 0.5``; :meth:`compute_loss` maps ``u`` back to ``b = (u + 1) / 2``,
    so the margin is on the paper's scale.

    Deviations for frozen embeddings, stated as the brief asks:
    - the paper's network-in-network CNN is replaced by an MLP trunk over the frozen embedding
      (LayerNorm, no BatchNorm); the slice width ``slice_dim`` is ours (the paper's slices follow
      from its last pooling layer);
    - triplets are sampled inside each mini-batch from the labels (uniformly over all valid
      triplets, ``triplets_per_anchor × batch`` of them) instead of being pre-generated over the
      training set; the loss is their mean rather than a sum;
    - the piece-wise threshold back-propagates straight-through (identity gradient) instead of
      its exact derivative, which is zero outside the band and leaves snapped bits untrainable;
    - ``epsilon`` defaults to 0.1 (our choice of the paper's "small positive" ε).
    - ``margin`` is the paper's 1. On snapped ``[0, 1]`` codes the squared distances are Hamming
      distances, so the margin is counted in bits and a one-bit margin can be met by barely
      separated codes at long lengths; a 4-bit margin was tried as a default and re-decided on
      the validation split (``bench/bench_utility.py --split val --set methods.dnnh.margin=...``),
      where it was no better, so the paper's value stands.

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``); the
    loss itself is not re-weighted, so it keeps its paper form.
    """

    name = "dnnh"
    Config = DNNHConfig
    per_sample_loss = False  # a triplet couples three samples of the batch

    def build_head(self) -> nn.Module:
        s = self.spec
        return DivideEncodeHead(
            in_dim=s.in_dim,
            n_bits=s.n_bits,
            slice_dim=self.config.slice_dim,
            hidden_dims=s.hidden_dims,
            dropout=s.dropout,
            standardize=s.standardize,
        )

    def forward(self, x: Tensor) -> Tensor:
        b = self.head(x)
        if self.training:
            b = piecewise_threshold(b, self.config.epsilon)
        return 2.0 * b - 1.0

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        b = 0.5 * (u + 1.0)
        a, p, n = functional.mine_triplets(y, self.config.triplets_per_anchor * u.shape[0])
        ranking = functional.triplet_ranking_loss(b[a], b[p], b[n], self.config.margin)
        return {"loss": ranking, "ranking": ranking}
