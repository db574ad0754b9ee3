"""The privacy/utility trade-off on one scale: leakage shares and Pareto fronts (pure functions).

Every attack number of ``privacy/`` stands beside its code-blind baseline ``b`` (what an attacker
gets without the release: chance, the aux mean, a constant code) and the same attack on the float
embeddings ``f`` (the leaky reference). The **leakage share** of a release with attack number ``a``

    share = (a - b) / (f - b)

puts every attack on one scale: 0 = no more than the code-blind baseline, 1 = as much as releasing
the float embeddings; it may leave [0, 1] (a release that leaks more than the floats, or an attack
below its baseline by chance) and is left undefined (NaN) where the attack does not bite on the
floats (``f <= b``), since nothing is then there to share. Utility is the retention of the float
KNN's balanced accuracy, so a release is a point (leakage share, retention) and the float
embeddings sit at (1, 1) by definition.

:data:`LEAKAGE_NUMBERS` lists the one headline number per attack that the report compares (a
number where higher means more leakage); :func:`pareto_mask` picks the releases that no other
release beats on both axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LeakageNumber:
    """One headline attack number: ``key`` with ``{group}`` standing for ``train`` or ``test``
    (``None`` in ``groups`` for an attack without victim groups: membership, whose float
    counterpart does not exist, since float embeddings are not trained, so its share is NaN)."""

    attack: str
    key: str
    groups: tuple[str | None, ...] = ("train", "test")
    #: where the code-blind baseline is stored, if not at ``<key>_baseline``
    baseline_key: str | None = None

    def name(self, group: str | None) -> str:
        return self.key.format(group=group)

    def baseline_name(self, group: str | None) -> str:
        return (self.baseline_key or self.key + "_baseline").format(group=group)


#: the headline number of each attack (higher = more leakage); THREAT_MODEL.md defines each one
LEAKAGE_NUMBERS: tuple[LeakageNumber, ...] = (
    LeakageNumber("linkage", "linkage/{group}/top1"),
    LeakageNumber("reidentification", "inversion/{group}/reid_top1"),
    LeakageNumber("inversion", "inversion/{group}/cosine_centered"),
    LeakageNumber("attribute", "attribute/{group}/balanced_accuracy"),
    LeakageNumber(
        "uniqueness",
        "anonymity/{group}/r0/share_unique",
        baseline_key="anonymity/{group}/share_unique_baseline",
    ),
    LeakageNumber("reconstruction", "reconstruction/{group}/psnr"),
    LeakageNumber("membership", "membership/auc", groups=(None,)),
)


def leakage_share(value: float, baseline: float, float_value: float) -> float:
    """``(value - baseline) / (float_value - baseline)``; NaN when any input is missing (NaN) or
    the attack does not beat its baseline on the float embeddings (``float_value <= baseline``)."""
    if any(math.isnan(v) for v in (value, baseline, float_value)):
        return math.nan
    span = float_value - baseline
    if not span > 1e-12:
        return math.nan
    return (value - baseline) / span


def attack_triplet(
    metrics: Mapping[str, float], number: LeakageNumber, group: str | None, *, float_control: bool
) -> tuple[float, float, float]:
    """``(value, baseline, float value)`` of ``number`` in one attack metrics file, NaN where the
    file lacks it (an attack skipped, e.g. reconstruction without images, membership on a
    release). ``float_control``: the file is the attack on the float embeddings, its own float
    value; the caller says so (a head's file that happens to hold no ``_float`` key, such as a
    membership-only attack, is not the control)."""
    key = number.name(group)
    value = float(metrics.get(key, math.nan))
    baseline = float(metrics.get(number.baseline_name(group), math.nan))
    float_value = value if float_control else float(metrics.get(f"{key}_float", math.nan))
    return value, baseline, float_value


def pareto_mask(utility: np.ndarray, leakage: np.ndarray) -> np.ndarray:
    """``mask[i]`` is True when no point ``j`` has ``utility[j] >= utility[i]`` and
    ``leakage[j] <= leakage[i]`` with one of the two strict (higher utility and lower leakage are
    better). Points with a NaN coordinate are never on the front and never dominate; equal points
    are all kept."""
    u = np.asarray(utility, dtype=np.float64)
    leak = np.asarray(leakage, dtype=np.float64)
    if u.shape != leak.shape or u.ndim != 1:
        raise ValueError(f"utility {u.shape} and leakage {leak.shape} must be equal 1-D shapes")
    ok = ~(np.isnan(u) | np.isnan(leak))
    uj, lj = u[None, :], leak[None, :]
    ui, li = u[:, None], leak[:, None]
    beats = (uj >= ui) & (lj <= li) & ((uj > ui) | (lj < li)) & ok[None, :]
    return ok & ~beats.any(axis=1)


def least_leakage_at(
    utility: np.ndarray, leakage: np.ndarray, *, min_utility: float
) -> tuple[float, int]:
    """The smallest leakage among points with ``utility >= min_utility`` and its index (among
    equal leakages, the point of highest utility, then the first); ``(NaN, -1)`` when no point with a defined leakage reaches ``min_utility``."""
    u = np.asarray(utility, dtype=np.float64)
    leak = np.asarray(leakage, dtype=np.float64)
    ok = ~np.isnan(leak) & ~np.isnan(u) & (u >= min_utility)
    if not ok.any():
        return math.nan, -1
    idx = np.flatnonzero(ok)
    least = leak[idx].min()
    tied = idx[leak[idx] == least]
    best = int(tied[np.argmax(u[tied])])  # ties on leakage: the most useful, then the first
    return float(least), best
