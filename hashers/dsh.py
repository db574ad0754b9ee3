"""DSH: Deep Supervised Hashing (see :class:`DSH`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hashers import functional as HF
from hashers.base import HashingMethod


@dataclass(frozen=True, kw_only=True)
class DSHConfig:
    alpha: float = 0.01  # weight of the ‖|u| - 1‖₁ regulariser (paper: 0.01)
    margin_per_bit: float = 2.0  # margin m = margin_per_bit · n_bits (paper: m = 2k)

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"alpha: {self.alpha} must be >= 0")
        if self.margin_per_bit <= 0:
            raise ValueError(f"margin_per_bit: {self.margin_per_bit} must be > 0")


def contrastive_pair_terms(u: Tensor, S: Tensor, margin: float) -> Tensor:
    """Per-pair DSH contrastive terms ``[B, B]`` (diagonal included; callers pick the pairs).

    ``½ S_ij D_ij + ½ (1 - S_ij) max(m - D_ij, 0)`` with ``D_ij = ‖u_i - u_j‖²``. The distance is
    formed from the Gram matrix (``‖u_i‖² + ‖u_j‖² - 2 u_i·u_j``: ``O(B²)`` memory instead of the
    ``O(B²K)`` of explicit differences, 3x faster at 36 bits), clamped at 0 against cancellation,
    with an exact 0 on the diagonal.
    """
    sq = (u * u).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (u @ u.T)).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(u.shape[0], dtype=u.dtype, device=u.device))
    return 0.5 * S * d2 + 0.5 * (1.0 - S) * torch.relu(margin - d2)


class DSH(HashingMethod):
    """DSH: Deep Supervised Hashing.

    Liu, Wang, Shan & Chen, "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016.

    Loss (paper eq. 4 with ``y = 1 - S``): for each pair of images in the mini-batch,
    ``L_ij = ½ S_ij ‖u_i - u_j‖² + ½ (1 - S_ij) max(m - ‖u_i - u_j‖², 0)
    + α (‖|u_i| - 1‖₁ + ‖|u_j| - 1‖₁)``, with margin ``m = 2k`` for ``k`` bits and ``α = 0.01``.
    ``u`` is the linear output of the head (no squashing activation, as in the paper); the
    regulariser pulls every entry towards ±1 and the binary code is ``u > 0``.

    Deviations for frozen embeddings:
    - the paper's three-layer CNN on raw images is replaced by an MLP head over the frozen
      embedding (``hashers.heads.MLPHead``);
    - the paper sums ``L_ij`` over the pairs of a batch; we take the mean over the
      ``B(B-1)/2`` unordered pairs ``i < j`` (same minimiser, a batch-size-free scale). The
      regulariser term is that same pair mean of ``r_i + r_j``, which equals
      ``2 · mean_i ‖|u_i| - 1‖₁`` (sum over bits, mean over samples); reported as
      ``"regularizer"`` before the ``α`` weight. A batch of one has no pair: its contrastive term
      is 0;
    - pairs are formed online within each mini-batch, as in the paper (no memory bank).
    """

    name = "dsh"
    Config = DSHConfig
    per_sample_loss = False  # the contrastive term couples every pair in the batch

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        n = u.shape[0]
        margin = self.config.margin_per_bit * self.spec.n_bits
        r = (u.abs() - 1.0).abs().sum(dim=1)  # ‖|u_i| - 1‖₁
        regularizer = 2.0 * r.mean()
        if n >= 2:
            S = HF.label_similarity(y)
            i, j = torch.triu_indices(n, n, offset=1, device=u.device)
            contrastive = contrastive_pair_terms(u, S, margin)[i, j].mean()
        else:
            contrastive = u.sum() * 0.0
        return {
            "loss": contrastive + self.config.alpha * regularizer,
            "contrastive": contrastive,
            "regularizer": regularizer,
        }
