"""Releasing codes with a guarantee of their own: ε-LDP randomised response and k-anonymity.

DP-SGD (:mod:`privacy.dp`) protects the training records' influence on the *hasher*; a released
code is still a deterministic function of its record, so whoever holds a record can hash it and find
it. The two mechanisms here act on the codes themselves.

**Randomised response on bits** (Warner, JASA 1965; as an LDP mechanism, Erlingsson, Pihur &
Korolova, "RAPPOR", CCS 2014): every bit of a K-bit code is kept with probability
``p_keep = e^{ε/K} / (1 + e^{ε/K})`` and flipped otherwise, independently. For any two codes and any
output, the probability ratio is ``∏_{differing bits} (p_keep / (1 - p_keep)) <= e^{ε}`` (equality
when they differ in every bit), so the released code is ε-locally differentially private: the
guarantee holds for each record on its own and survives any post-processing (KNN, attacks), as
long as the flips are unknown to the attacker (*Randomness* below). The budget is split evenly
over bits (basic composition), which is tight for this mechanism; mechanisms that do better for
high-dimensional binary vectors (e.g. sampling a subset of bits) trade the per-bit noise for missing bits and were not adopted here.

*Randomness.* The guarantee holds only against someone who cannot recompute the flips: whoever
knows the generator's seed regenerates the flip mask and removes every flip. Flips are drawn from
numpy's PCG64 (:func:`flip_generator`), seeded by default (``seed=None``) from OS entropy through
``numpy.random.SeedSequence()``, which is recorded nowhere. An integer seed makes a release
reproducible (experiments, tests); each release's stream is then derived from the seed *and* what
is being released (:func:`release_stream`: dataset, method, bits, split, mechanism, ε_code, DP
target of the head), so two heads, two splits or two releases never share a flip mask (XOR of two
releases sharing a mask would be the XOR of their true codes), and the guarantee holds only
against someone without the seed. PCG64 is not a cryptographically secure generator, even when
seeded from OS entropy: the guarantee also assumes that nobody reconstructs its state from what is
published (the published bits are its outputs, thresholded and XORed with the unknown true codes);
that is not analysed here.

The curator who runs it: in the pipeline the release stage computes the true codes and applies
randomised response centrally, so it sees every true code (it must be trusted with them); the
*output* is per-record randomised, so each published code is ε-LDP on its own and nothing later
(any analysis of the published codes, any other record's code) weakens it.

*Debiasing.* With flip rate ``f`` per bit on a pair (``f = 1 - p_keep`` when one side is released,
``2 p_keep (1 - p_keep)`` when both are), ``E[d_obs] = d (1 - 2f) + K f``, so
``d̂ = (d_obs - K f) / (1 - 2f)`` is unbiased (:func:`debiased_hamming`). The map is increasing in
``d_obs``, so KNN rankings, votes and mAP are unchanged by it; it matters only where absolute
distances matter (radius search, distance thresholds, reporting distances), and the evaluate stage
therefore ranks raw distances.

**k-anonymous release** (Sweeney, "k-anonymity: a model for protecting privacy", IJUFKS 2002):
every released code is held by at least ``k`` records of the release. Codes held by fewer than
``k`` records are replaced by the nearest code (Hamming) held by ``k`` or more records; ties go to
the smaller code in lexicographic bit order, so the result is deterministic and independent of
record order. The rule reads nothing but the candidate codes, which the release publishes, so an
attacker can apply it exactly (:func:`snap_to_k_anonymous`; a tie broken by the codes'
pre-release holder counts, as before, could not be). If no code has ``k`` holders, every record
receives the most frequent code (the smaller one among equally frequent codes). It bounds linkage
*by the code alone* to ``1/k``; it does not stop attribute inference when a whole anonymity set
shares one label, and it is not DP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.errors import PrivacyError
from privacy.streams import seed_sequence


def _check_bits(bits: np.ndarray) -> np.ndarray:
    arr = np.asarray(bits)
    if arr.dtype != np.bool_:  # a cast would make every ±1 or real-valued entry True
        raise PrivacyError(f"codes must be bool [N, K], got {arr.dtype} (pass u > 0, not signs)")
    if arr.ndim != 2:
        raise PrivacyError(f"codes must be bool [N, K], got shape {arr.shape}")
    return arr


def _check_epsilon(epsilon: float) -> None:
    if math.isnan(epsilon) or not epsilon > 0:
        raise PrivacyError(
            f"release epsilon_code={epsilon}: the code budget must be > 0 (e.g. 1, 4, 16, 64; "
            "inf = release the codes as they are)"
        )


_DRAW_UNIT = 2.0**-53  # numpy's Generator.random() draws multiples of 2^-53 in [0, 1)


def keep_probability(epsilon: float, n_bits: int) -> float:
    """``e^{ε/K} / (1 + e^{ε/K})``: the chance each bit is released unchanged (1 for ε = ∞).

    Exactly the mechanism's: :func:`randomized_response` flips a bit when a uniform draw (a
    multiple of 2^-53) is ``>= keep``, so the flip rate is exactly ``1 - keep`` when ``keep`` is
    a multiple of 2^-53. The formula is rounded *down* to one (a few 2^-53 below it, never
    below 1/2), so flips are never rarer than the formula's and the per-bit ratio
    ``keep / (1 - keep)`` never exceeds ``e^{ε/K}``. Above ε/K ≈ 36.7 the formula's flip rate
    is below 2^-53: the keep probability is then ``1 - 2^-53`` (a per-bit ratio of
    ``2^53 - 1 < e^{ε/K}``), never 1, which would release the codes unchanged (ε = ∞).
    """
    _check_epsilon(epsilon)
    if math.isinf(epsilon):
        return 1.0
    per_bit = epsilon / n_bits
    tail = math.exp(-per_bit)
    flip = tail / (1.0 + tail)  # 1 / (1 + e^{ε/K}) without overflow
    # relative rounding error of `flip`: <= ε/K ulp from rounding ε/K, a few from exp, + and /;
    # the margin covers it, so `units` never rounds below the formula's flip rate
    margin = (per_bit + 8.0) * 2.0**-52
    units = min(2**52, max(1, math.ceil(flip * (1.0 + margin) / _DRAW_UNIT)))
    return 1.0 - units * _DRAW_UNIT


Seed = int | np.random.SeedSequence | None


def release_stream(seed: int | None, context: Mapping[str, Any]) -> np.random.SeedSequence:
    """The seed sequence of one release: OS entropy for ``seed=None`` (never recorded), else
    derived from ``seed`` and ``context`` (what is released: dataset, method, bits, split,
    mechanism, ε_code, ...), so releases that differ in any of these never share a stream.

    The context is hashed into the seed (:func:`privacy.streams.seed_sequence`): the same (seed,
    context) gives the same stream on every platform.
    """
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PrivacyError(f"release seed {seed!r}: use a non-negative integer or None (secret)")
    return seed_sequence(seed, context)


def flip_generator(seed: Seed) -> np.random.Generator:
    """numpy PCG64 over ``seed``: an int or a :class:`numpy.random.SeedSequence` (reproducible),
    ``None`` = fresh OS entropy (module doc, *Randomness*)."""
    if seed is None:
        seed = np.random.SeedSequence()
    return np.random.default_rng(seed)


def randomized_response(bits: np.ndarray, epsilon: float, *, seed: Seed) -> np.ndarray:
    """ε-LDP release of ``bool [N, K]`` codes: each bit flipped with probability ``1 - p_keep``.

    ``seed``: ``None`` draws the flips from OS entropy (the only choice that leaves no seed to
    replay; the generator is still not cryptographic: module doc); an int or a :class:`numpy.random.SeedSequence` makes them
    reproducible, and anyone who knows it can undo them (module doc, *Randomness*).
    """
    arr = _check_bits(bits)
    keep = keep_probability(epsilon, arr.shape[1])
    if keep == 1.0:
        return arr.copy()
    flip = flip_generator(seed).random(arr.shape) >= keep
    return arr ^ flip


def pair_flip_rate(epsilon: float, n_bits: int, *, both_released: bool) -> float:
    """Probability that a bit differs from the truth on a (query, database) pair."""
    f = 1.0 - keep_probability(epsilon, n_bits)
    return 2.0 * f * (1.0 - f) if both_released else f


def debiased_hamming(observed: np.ndarray, n_bits: int, flip_rate: float) -> np.ndarray:
    """Unbiased estimate ``(d_obs - K f) / (1 - 2f)`` of the true Hamming distance (module doc)."""
    if not 0 <= flip_rate < 0.5:
        raise PrivacyError(f"flip rate {flip_rate}: must lie in [0, 0.5) to debias distances")
    return (np.asarray(observed, dtype=np.float64) - n_bits * flip_rate) / (1.0 - 2.0 * flip_rate)


def nearest_held(codes: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Row of ``held`` (distinct codes in lexicographic bit order, as ``np.unique`` returns them)
    nearest in Hamming distance to each row of ``codes``; ties go to the earlier (smaller) code —
    the k-anonymous release's deterministic rule, which reads only public codes."""
    out = np.empty(len(codes), dtype=np.int64)
    for i, code in enumerate(codes):
        out[i] = int(np.argmin((held != code).sum(axis=1)))  # argmin: the first among ties
    return out


def snap_to_k_anonymous(bits: np.ndarray, released: np.ndarray, k: int) -> np.ndarray:
    """Map codes onto a k-anonymous release the way :func:`k_anonymize` maps its outliers: every
    code becomes the nearest code held by ``>= k`` records of ``released`` (itself if it is one),
    ties to the smaller code. Applied to the release's own input codes it reproduces the release.

    The attacker's side of the k-anonymous release: ``released`` is public, so an attacker can pass
    their own codes through the same rule before training on them (THREAT_MODEL.md).
    """
    arr, rel = _check_bits(bits), _check_bits(released)
    held, counts = np.unique(rel, axis=0, return_counts=True)
    keep = counts >= k
    if not keep.any():  # the release fell back to its most frequent code
        keep = counts == counts.max()
    held = held[keep]
    uniq, inverse = np.unique(arr, axis=0, return_inverse=True)
    return held[nearest_held(uniq, held)][inverse.reshape(-1)]


@dataclass(frozen=True)
class KAnonymousRelease:
    """Released codes and what the release changed (aggregates only leave this object)."""

    codes: np.ndarray  # bool [N, K]
    changed: np.ndarray  # bool [N]: the record's code was replaced
    k: int
    min_anonymity_before: int
    min_anonymity_after: int
    distinct_before: int
    distinct_after: int

    def summary(self) -> dict[str, float]:
        return {
            "k": float(self.k),
            "share_changed": float(self.changed.mean()) if len(self.changed) else 0.0,
            "min_anonymity_before": float(self.min_anonymity_before),
            "min_anonymity_after": float(self.min_anonymity_after),
            "distinct_codes_before": float(self.distinct_before),
            "distinct_codes_after": float(self.distinct_after),
        }


def k_anonymize(bits: np.ndarray, k: int) -> KAnonymousRelease:
    """Replace every code held by fewer than ``k`` records by the nearest code held by >= k.

    Deterministic (module doc); a release that is already k-anonymous is returned unchanged.
    """
    arr = _check_bits(bits)
    n = arr.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise PrivacyError(
            f"release k={k}: use 1 <= k <= the number of released records ({n}); default 20"
        )
    # np.unique sorts rows lexicographically (False < True): the tie order below
    uniq, inverse, counts = np.unique(arr, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    safe = np.flatnonzero(counts >= k)
    if len(safe) == 0:
        safe = np.array([int(np.argmax(counts))])  # argmax: first (smallest) code among ties
    mapping = np.arange(len(uniq))
    unsafe = np.setdiff1d(np.arange(len(uniq)), safe)
    if len(unsafe):
        mapping[unsafe] = safe[nearest_held(uniq[unsafe], uniq[safe])]
    new_inverse = mapping[inverse]
    released = uniq[new_inverse]
    after = np.bincount(new_inverse, minlength=len(uniq))
    return KAnonymousRelease(
        codes=released,
        changed=new_inverse != inverse,
        k=int(k),
        min_anonymity_before=int(counts.min()),
        min_anonymity_after=int(after[after > 0].min()),
        distinct_before=len(uniq),
        distinct_after=int((after > 0).sum()),
    )
