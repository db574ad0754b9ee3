"""Shared maths of the hashing losses; every method calls these instead of re-deriving them.

All functions are pure, batched and differentiable. Conventions: relaxed codes ``u`` are
``[B, K]``; labels are multi-hot float ``[B, C]``; a similarity matrix ``S`` is ``{0, 1}``.

The similarity rule (:func:`label_similarity`, used by every pairwise and triplet loss here):
``S_ij = 1`` when samples i and j share at least one label, **or when both hold no label at
all**; otherwise 0. Multi-label sets keep rows without any label (ChestMNIST's "no finding"
rows are all-zero), and two such rows have the same (empty) label set: the multi-label KNN
evaluation scores an unlabelled query right exactly when it predicts the empty set, so for
training these rows form one group of their own, similar to each other and dissimilar to every
labelled row. In particular ``S_ii = 1`` for every row, so losses that keep the self pairs
(DPSH, DHN, HashNet, DSDH, SAEH) never push a sample's code away from itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_similarity(y1: Tensor, y2: Tensor | None = None) -> Tensor:
    """``S_ij = 1`` if ``y1[i]`` and ``y2[j]`` share a label or both hold none, else 0.

    Float ``[B1, B2]``; the rule is the module's (two empty label sets are the same label set, so
    ``S_ii = 1`` always).
    """
    y2 = y1 if y2 is None else y2
    shared = (y1 @ y2.T) > 0
    empty1 = ~(y1 > 0).any(dim=1)
    empty2 = ~(y2 > 0).any(dim=1)
    return (shared | (empty1.unsqueeze(1) & empty2.unsqueeze(0))).to(y1.dtype)


def inner_product_logits(u1: Tensor, u2: Tensor | None = None) -> Tensor:
    """``Θ_ij = ½ u1_i · u2_j`` — the pairwise logit of DPSH, DSDH (its ``Ψ``) and SAEH's
    similarity term. DHN (``logit_scale · u_iᵀu_j``, the paper's plain inner product by
    default) and HashNet (``α ⟨h_i, h_j⟩``) form their own logits and do not call this."""
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
    """``mean ‖u - sign(u)‖²`` per element (the DPSH / TCL quantisation term; sign is not back-propagated)."""
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


def soft_label_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Softmax cross-entropy against the label distribution ``y / Σy``, mean over the batch.

    Single-label (one-hot ``y``) this is the usual cross-entropy. Multi-hot rows spread the target
    evenly over their labels (the softmax analogue for multi-label data); a row without labels
    contributes 0 but still counts in the mean, so sample i's term depends on sample i alone.
    """
    target = y / y.sum(dim=1, keepdim=True).clamp_min(1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mine_triplets(
    y: Tensor, n_triplets: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample ``n_triplets`` in-batch triplets ``(a, p, n)`` uniformly, with replacement.

    Valid triplets: ``p != a`` is similar to ``a`` (``S_ap = 1`` under :func:`label_similarity`:
    a shared label, or both unlabelled) and ``n`` is not (``S_an = 0``, ``n != a``). Drawing the anchor with probability ``∝ |P_a|·|N_a|`` and then ``p``
    and ``n`` uniformly is uniform over the set of all valid triplets, without enumerating it
    (``B³`` of them). Returns three ``long`` index tensors, empty when the batch holds none.
    ``generator=None`` draws from torch's global generator (seeded by the trainer).
    """
    S = label_similarity(y)
    eye = torch.eye(S.shape[0], dtype=torch.bool, device=S.device)
    pos = S.masked_fill(eye, 0.0)
    neg = (1.0 - S).masked_fill(eye, 0.0)
    weight = pos.sum(dim=1) * neg.sum(dim=1)
    if n_triplets < 1 or float(weight.sum()) == 0.0:
        empty = torch.zeros(0, dtype=torch.long, device=y.device)
        return empty, empty.clone(), empty.clone()
    a = torch.multinomial(weight, n_triplets, replacement=True, generator=generator)
    return a, _uniform_in_rows(pos, a, generator), _uniform_in_rows(neg, a, generator)


def _uniform_in_rows(mask: Tensor, rows: Tensor, generator: torch.Generator | None) -> Tensor:
    """For each ``r`` in ``rows``, a column drawn uniformly among the nonzero ``mask[r]`` entries.

    Inverse-CDF sampling on the row's running count (one ``searchsorted``), ~10x faster on CPU
    than ``torch.multinomial`` over ``mask[rows]``. Every row in ``rows`` must hold a nonzero.
    """
    cdf = mask.cumsum(dim=1)[rows]  # [T, B], integer-valued
    draw = torch.rand(rows.shape[0], 1, generator=generator, device=mask.device) * cdf[:, -1:]
    col = torch.searchsorted(cdf, draw.floor(), right=True)
    return col.squeeze(1).clamp_max(mask.shape[1] - 1)


def triplet_ranking_loss(anchor: Tensor, pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    """``mean max(0, margin - (‖a - n‖² - ‖a - p‖²))`` over rows (DNNH eq. 1, DSH-GAN's hash stream).

    With no rows the result is a zero that stays connected to the graph (gradients are zero).
    """
    if anchor.shape[0] == 0:
        return anchor.sum() * 0.0
    d_pos = (anchor - pos).pow(2).sum(dim=1)
    d_neg = (anchor - neg).pow(2).sum(dim=1)
    return F.relu(margin - (d_neg - d_pos)).mean()


def neighbour_distribution(x: Tensor, perplexity: float, *, iters: int = 24) -> Tensor:
    """SNE's neighbour distribution ``P [B, B]`` of the rows of ``x`` (no gradient).

    ``P_ij = exp(-β_i d_ij) / Σ_{l≠i} exp(-β_i d_il)`` for ``j ≠ i`` (``P_ii = 0``) with ``d_ij``
    the squared Euclidean distance, and each row's precision ``β_i`` set by bisection so that the
    row's perplexity equals ``perplexity`` (Hinton & Roweis 2002, "Stochastic Neighbor
    Embedding", NIPS 15, sec. 2: ``2^H(P_i)`` with the entropy in bits, computed here as the
    equal ``exp(H(P_i))`` with the entropy in nats; either counts effective neighbours).
    ``perplexity`` is clipped to ``B - 1``. Distances are scaled by each row's mean off-diagonal
    distance first, so the bisection range of ``log β``, ``[-30, 30]``, does not depend on the
    features' scale; ``iters`` halvings leave ``log β`` within ``60 / 2^iters`` (4e-6 at the
    default 24).
    """
    with torch.no_grad():
        b = x.shape[0]
        xc = x.float() - x.float().mean(dim=0)  # a shared offset would cost float32 precision
        # the direct difference, not the ‖a‖² + ‖b‖² − 2ab matmul form: far-apart clusters
        # would cancel a small within-cluster distance away in float32
        d = torch.cdist(xc, xc, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        eye = torch.eye(b, dtype=torch.bool, device=x.device)
        scale = d.masked_fill(eye, 0.0).sum(dim=1, keepdim=True) / max(b - 1, 1)
        d = (d / scale.clamp_min(torch.finfo(d.dtype).tiny)).masked_fill(eye, float("inf"))
        target = torch.log(torch.tensor(min(float(perplexity), b - 1.0), dtype=d.dtype))
        lo = torch.full((b, 1), -30.0, dtype=d.dtype, device=x.device)
        hi = torch.full((b, 1), 30.0, dtype=d.dtype, device=x.device)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            logp = torch.log_softmax(-mid.exp() * d, dim=1)
            entropy = -(logp.exp() * logp.masked_fill(eye, 0.0)).sum(dim=1, keepdim=True)
            too_flat = entropy > target  # entropy falls as β grows
            lo = torch.where(too_flat, mid, lo)
            hi = torch.where(too_flat, hi, mid)
        p = torch.softmax(-(0.5 * (lo + hi)).exp() * d, dim=1)
        return p.to(x.dtype)


def neighbourhood_loss(u: Tensor, x: Tensor, perplexity: float) -> Tensor:
    """``mean_i KL(P_i ‖ Q_i)``: how far the codes' neighbourhoods are from the inputs'.

    ``P`` is :func:`neighbour_distribution` of the embeddings ``x`` (the float KNN's Euclidean
    geometry); ``Q_i = softmax_{j≠i}(-d_ij)`` with ``d_ij = (K - u_i·u_j) / 2`` the relaxed
    Hamming distance of the codes, one bit per unit of the logit. Zero for a batch of one row.
    """
    if u.shape[0] < 2:
        return u.sum() * 0.0
    p = neighbour_distribution(x, perplexity)
    eye = torch.eye(u.shape[0], dtype=torch.bool, device=u.device)
    d = 0.5 * (u.shape[1] - u @ u.T)
    logq = torch.log_softmax((-d).masked_fill(eye, float("-inf")), dim=1)
    logp = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    return (p * (logp - logq.masked_fill(eye, 0.0))).sum(dim=1).mean()
