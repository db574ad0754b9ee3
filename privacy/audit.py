"""Empirical privacy audit: a lower bound ε̂ on the privacy loss, from one run with canaries.

Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023. ``m``
canaries are each included in the training set (or, for a code release, given secret bit 1)
independently with probability 1/2. An auditor scores every canary, guesses "in" for the
``k_plus`` highest scores and "out" for the ``k_minus`` lowest, abstains on the rest, and counts
``v`` correct guesses out of ``r = k_plus + k_minus``. Under (ε, δ)-DP (their Theorem 3.1 / the
p-value of their Appendix D code, re-derived here, not copied) the chance of ``>= v`` correct is at most

    p(ε, δ) = P[Bin(r, q) >= v] + 2 m δ · max_{1<=i<=v} P[v - i <= Bin(r, q) < v] / i,
    q = e^ε / (1 + e^ε),

so every ε with ``p(ε, δ) < 1 - confidence`` is rejected, and ε̂ is the largest rejected ε
(bisection: ``p`` increases with ε). ε̂ is a *lower* bound that holds with the stated confidence:
a DP implementation whose ε̂ exceeds its accountant's ε at 95 % has a bug (or a false ε).

Choosing ``(k_plus, k_minus)`` after looking at the results would void the confidence;
:func:`audit_epsilon` therefore takes a fixed list of candidate guess counts and applies a
Bonferroni correction over it (each candidate is tested at ``(1 - confidence) / len(candidates)``).
No maintained package provides this bound for PyTorch stacks (jax_privacy's ``auditing`` module
needs JAX and dp_accounting), so this small implementation is checked in the tests against
hand-computed cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from torch import Tensor

from hashers.base import HashingMethod
from privacy.errors import PrivacyError


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on ``P[>= v of r guesses correct]`` for an (ε, δ)-DP mechanism (module doc)."""
    if not 0 <= v <= r <= m:
        raise PrivacyError(f"audit counts: need 0 <= v={v} <= r={r} <= m={m}")
    if not epsilon >= 0 or not 0 <= delta <= 1:
        raise PrivacyError(f"audit null hypothesis: ε={epsilon} must be >= 0, δ={delta} in [0, 1]")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))  # i = 1..v
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_epsilon(
    m: int, r: int, v: int, *, delta: float, confidence: float = 0.95, eps_max: float = 100.0
) -> float:
    """Largest ε rejected at ``confidence`` by ``v`` correct out of ``r`` guesses (0 if none),
    at most ``eps_max``; every value returned was itself rejected (a lower bound stays one)."""
    if not 0 < confidence < 1:
        raise PrivacyError(f"audit confidence={confidence}: must lie in (0, 1), e.g. 0.95")
    alpha = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, min(1.0, eps_max)
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        if hi >= eps_max:
            return eps_max  # rejected even at the cap
        lo, hi = hi, min(2 * hi, eps_max)  # never report a cap that was not itself rejected
    for _ in range(60):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float
    confidence: float
    canaries: int
    guesses: int
    correct: int

    def summary(self) -> dict[str, float]:
        return {
            "audit_epsilon_lower_bound": self.epsilon_lower_bound,
            "audit_confidence": self.confidence,
            "audit_canaries": float(self.canaries),
            "audit_guesses": float(self.guesses),
            "audit_correct": float(self.correct),
        }


def audit_epsilon(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    guess_fractions: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
) -> AuditResult:
    """One-run audit of membership ``scores`` (higher = more likely included) of ``m`` canaries.

    For each fraction ``g`` in ``guess_fractions`` the auditor guesses on the ``g m / 2`` highest
    ("in") and ``g m / 2`` lowest ("out") scores; the best bound over the fractions is returned,
    each tested at the Bonferroni level ``(1 - confidence) / len(guess_fractions)``. Score ties are
    broken by canary index (the order is fixed before the secrets are drawn).
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if m < 2 or included.shape != scores.shape:
        raise PrivacyError(f"audit: need >= 2 canaries with one inclusion flag each, got {m}")
    if not np.isfinite(scores).all():
        raise PrivacyError("audit: membership scores must be finite")
    if not 0 < confidence < 1:
        raise PrivacyError(f"audit confidence={confidence}: must lie in (0, 1), e.g. 0.95")
    if not guess_fractions:
        raise PrivacyError("audit: guess_fractions is empty; give at least one, e.g. (0.1, 1.0)")
    bad = [g for g in guess_fractions if not 0 < g <= 1]  # NaN too: round() raised ValueError
    if bad:
        raise PrivacyError(
            f"audit: guess fraction(s) {bad} outside (0, 1]: each is the share of the canaries "
            "guessed on (half highest, half lowest), e.g. (0.02, 0.1, 1.0)"
        )
    order = np.lexsort((np.arange(m), -scores))  # highest score first, ties by index
    level = 1.0 - (1.0 - confidence) / len(guess_fractions)
    best = AuditResult(0.0, confidence, m, 0, 0)
    for g in guess_fractions:
        half = max(1, round(g * m / 2))
        half = min(half, m // 2)
        top, bottom = order[:half], order[m - half :]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        eps = one_run_epsilon(m, 2 * half, correct, delta=delta, confidence=level)
        if eps > best.epsilon_lower_bound:
            best = AuditResult(eps, confidence, m, 2 * half, correct)
    return best


def loss_scores(method: HashingMethod, x: Tensor, y: Tensor) -> np.ndarray:
    """White-box membership scores: minus each record's own loss under the trained ``method``.

    Records the head was trained on tend to have a lower loss. Only for methods whose loss does
    not index per-training-row state by ``idx`` (CSQ, TCL; not CNNH, whose targets are per row)
    and is a per-record loss (``per_sample_loss``): a pairwise or triplet loss scored on a batch
    of one is no record's own loss, and DSDH's reads the binary code of training row 0 for all.
    """
    import torch

    if getattr(method, "targets", None) is not None and method.name == "cnnh":
        raise PrivacyError("audit: cnnh's loss reads per-training-row targets; audit csq or tcl")
    if not method.per_sample_loss:
        raise PrivacyError(
            f"audit: {method.name}'s loss couples the records of a batch (per_sample_loss is "
            "False), so one record scored alone has no loss of its own; audit csq or tcl"
        )
    method.eval()
    out = np.empty(len(x))
    with torch.no_grad():
        for i in range(len(x)):
            terms = method.compute_loss(method(x[i : i + 1]), y[i : i + 1], torch.zeros(1).long())
            out[i] = -float(terms["loss"])
    return out
