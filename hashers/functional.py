"""Shared maths of the hashing losses; every method calls these instead of re-deriving them.

All functions are pure, batched and differentiable. Conventions: relaxed codes ``u`` are
``[B, K]``; labels are multi-hot float ``[B, C]``; a similarity matrix ``S`` is ``{0, 1}`` with
``S_ij = 1`` when samples i and j share at least one label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_similarity(y1: Tensor, y2: Tensor | None = None) -> Tensor:
    """``S_ij = 1`` if ``y1[i]`` and ``y2[j]`` share a label, else 0 (float ``[B1, B2]``)."""
    y2 = y1 if y2 is None else y2
    return (y1 @ y2.T > 0).to(y1.dtype)


def inner_product_logits(u1: Tensor, u2: Tensor | None = None) -> Tensor:
    """``Θ_ij = ½ u1_i · u2_j`` — the pairwise logit of DPSH/DHN/HashNet/DSDH."""
    u2 = u1 if u2 is None else u2
    return 0.5 * (u1 @ u2.T)


def balanced_pair_weights(S: Tensor) -> Tensor:
    """HashNet's weights ``w_ij = |S|/|S1|`` for similar and ``|S|/|S0|`` for dissimilar pairs.

    Each class of pair then carries half of the total weight, whatever the label imbalance; without
    it a dataset dominated by one class drives every code to the same value (a collapse mode).
    Weights are normalised to mean 1, so the loss scale stays that of the unweighted mean.
    """
    n = S.numel()
    n_sim = S.sum()
    n_dis = n - n_sim
    w_sim = n / (2 * n_sim.clamp_min(1))
    w_dis = n / (2 * n_dis.clamp_min(1))
    w = torch.where(S > 0, w_sim, w_dis)
    return w / w.mean()


def pairwise_likelihood_loss(theta: Tensor, S: Tensor, weights: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of the pairwise labels under ``p(S_ij=1) = σ(Θ_ij)``.

    ``-log p = softplus(Θ) - S·Θ``, computed with ``softplus`` (never ``log(1 + exp(Θ))``, which
    overflows for ``Θ > 88`` in float32). Mean over pairs, or the weighted mean with ``weights``.
    """
    nll = F.softplus(theta) - S * theta
    if weights is None:
        return nll.mean()
    return (weights * nll).sum() / weights.sum()


def quantization_l2(u: Tensor) -> Tensor:
    """``mean ‖u - sign(u)‖²`` per element (the DPSH / DSDH quantisation term; sign is not back-propagated)."""
    return (u - torch.sign(u).detach()).pow(2).mean()


def quantization_logcosh(u: Tensor) -> Tensor:
    """DHN's smooth quantisation ``mean log cosh(|u| - 1)``, computed stably.

    ``log cosh(a) = |a| + softplus(-2|a|) - log 2``.
    """
    a = (u.abs() - 1.0).abs()
    return (a + F.softplus(-2.0 * a) - torch.log(torch.tensor(2.0, dtype=u.dtype))).mean()


def sign_with_ties(u: Tensor) -> Tensor:
    """``sign(u)`` with ``sign(0) = +1`` so binary targets are always ±1."""
    return torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))
