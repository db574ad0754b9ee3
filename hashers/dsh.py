"""DSH: Deep Supervised Hashing (see :class:`DSH`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hashers import functional
from hashers.bank import MemoryBankMixin, MemoryBankOptions
from hashers.base import HashingMethod, check_config_types


@dataclass(frozen=True, kw_only=True)
class DSHConfig(MemoryBankOptions):
    alpha: float = 0.01  # weight of the ‖|u| - 1‖₁ regulariser (paper: 0.01)
    margin_per_bit: float = 2.0  # margin m = margin_per_bit · n_bits (paper: m = 2k)
    balance_pairs: bool = True  # weigh similar and dissimilar pairs equally (False = the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        # library use (params.yaml refuses these already): NaN / inf gave a non-finite loss
        # blamed on train.lr, and balance_pairs="false" was truthy
        check_config_types(self, finite=("alpha", "margin_per_bit"), flags=("balance_pairs",))
        if self.alpha < 0:
            raise ValueError(f"alpha: {self.alpha} must be >= 0")
        if self.margin_per_bit <= 0:
            raise ValueError(f"margin_per_bit: {self.margin_per_bit} must be > 0")


def contrastive_pair_terms(
    u: Tensor, S: Tensor, margin: float, *, partners: Tensor | None = None
) -> Tensor:
    """Per-pair DSH contrastive terms ``[B, P]`` (callers pick the pairs).

    ``½ S_ij D_ij + ½ (1 - S_ij) max(m - D_ij, 0)`` with ``D_ij = ‖u_i - v_j‖²``, ``v`` the
    ``partners`` (memory-bank rows) or, by default, the batch itself (``[B, B]``, exact 0 distance
    on the diagonal). The distance is formed from the Gram matrix (``‖u_i‖² + ‖v_j‖² - 2 u_i·v_j``:
    ``O(BP)`` memory instead of the ``O(BPK)`` of explicit differences, 3x faster at 36 bits),
    clamped at 0 against cancellation.
    """
    v = u if partners is None else partners
    d2 = (u * u).sum(dim=1).unsqueeze(1) + (v * v).sum(dim=1).unsqueeze(0) - 2.0 * (u @ v.T)
    d2 = d2.clamp_min(0.0)
    if partners is None:
        d2 = d2 * (1.0 - torch.eye(u.shape[0], dtype=u.dtype, device=u.device))
    return 0.5 * S * d2 + 0.5 * (1.0 - S) * torch.relu(margin - d2)


class DSH(MemoryBankMixin, HashingMethod):
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
    - ``balance_pairs`` (on by default; off = the paper's plain mean) weights similar and
      dissimilar pairs so each kind carries half of the contrastive loss (HashNet's weights,
      :func:`hashers.functional.balanced_pair_weights`). On an imbalanced set the plain mean lets
      the similar pairs of the majority class dominate; the default was re-decided on the
      validation split (``bench/bench_utility.py --split val --set
      methods.dsh.balance_pairs=false``), where the plain mean scored far lower;
    - pairs are formed online within each mini-batch, as in the paper; ``memory_bank: true``
      pairs each batch with the stored codes of every training row instead
      (:class:`hashers.bank.CodeBank`, self pairs skipped, no gradient on the bank side).

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``), besides the
    ``balance_pairs`` pair weights above (a stated deviation from the paper's plain mean).
    """

    name = "dsh"
    Config = DSHConfig
    per_sample_loss = False  # the contrastive term couples every pair in the batch

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        margin = self.config.margin_per_bit * self.spec.n_bits
        r = (u.abs() - 1.0).abs().sum(dim=1)  # ‖|u_i| - 1‖₁
        regularizer = 2.0 * r.mean()
        p = self.partners(u, y, idx)
        S = functional.label_similarity(y, p.y)
        if p.in_batch:  # unordered pairs i < j of the batch
            pairs = torch.ones_like(S, dtype=torch.bool).triu(diagonal=1)
            terms = contrastive_pair_terms(u, S, margin)
        else:  # every bank row except the sample's own
            pairs = ~p.self_pairs(idx)
            terms = contrastive_pair_terms(u, S, margin, partners=p.u)
        if pairs.any():
            terms, S_pairs = terms[pairs], S[pairs]
            if self.config.balance_pairs:
                w = functional.balanced_pair_weights(S_pairs)
                contrastive = (w * terms).sum() / w.sum()
            else:
                contrastive = terms.mean()
        else:  # a batch of one has no pair
            contrastive = u.sum() * 0.0
        return {
            "loss": contrastive + self.config.alpha * regularizer,
            "contrastive": contrastive,
            "regularizer": regularizer,
        }
