"""Leakage shares and Pareto fronts of privacy/tradeoff.py against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.tradeoff import (
    LEAKAGE_NUMBERS,
    attack_triplet,
    leakage_share,
    least_leakage_at,
    pareto_mask,
)

BY_ATTACK = {n.attack: n for n in LEAKAGE_NUMBERS}


def test_leakage_share_hand_values() -> None:
    assert leakage_share(0.3, 0.1, 0.5) == pytest.approx(0.5)  # (0.3-0.1)/(0.5-0.1)
    assert leakage_share(0.1, 0.1, 0.5) == 0.0  # no more than code-blind
    assert leakage_share(0.5, 0.1, 0.5) == 1.0  # as leaky as the floats
    assert leakage_share(0.7, 0.1, 0.5) == pytest.approx(1.5)  # more than the floats: kept
    assert leakage_share(0.0, 0.1, 0.5) == pytest.approx(-0.25)  # below baseline: kept raw


@pytest.mark.parametrize(
    "value, baseline, float_value",
    [
        (0.3, 0.5, 0.5),
        (0.3, 0.6, 0.5),
        (math.nan, 0.1, 0.5),
        (0.3, math.nan, 0.5),
        (0.3, 0.1, math.nan),
    ],
)
def test_leakage_share_undefined(value: float, baseline: float, float_value: float) -> None:
    """No share where the attack does not bite on the floats or a number is missing."""
    assert math.isnan(leakage_share(value, baseline, float_value))


def test_attack_triplet_reads_head_and_float_control_files() -> None:
    head = {
        "linkage/test/top1": 0.2,
        "linkage/test/top1_baseline": 0.01,
        "linkage/test/top1_float": 0.6,
        "anonymity/train/r0/share_unique": 0.3,
        "anonymity/train/share_unique_baseline": 0.0,  # stored per group, not per radius
        "anonymity/train/r0/share_unique_float": 0.9,
        "membership/auc": 0.61,
        "membership/auc_baseline": 0.5,
    }
    assert attack_triplet(head, BY_ATTACK["linkage"], "test", float_control=False) == (
        0.2,
        0.01,
        0.6,
    )
    assert attack_triplet(head, BY_ATTACK["uniqueness"], "train", float_control=False) == (
        0.3,
        0.0,
        0.9,
    )
    value, base, flt = attack_triplet(head, BY_ATTACK["membership"], None, float_control=False)
    assert (value, base) == (0.61, 0.5) and math.isnan(flt)  # floats are not trained
    value, base, flt = attack_triplet(
        head, BY_ATTACK["reconstruction"], "test", float_control=False
    )
    assert all(math.isnan(v) for v in (value, base, flt))  # not measured
    control = {"linkage/test/top1": 0.6, "linkage/test/top1_baseline": 0.01}
    assert attack_triplet(control, BY_ATTACK["linkage"], "test", float_control=True) == (
        0.6,
        0.01,
        0.6,
    )
    # a head's membership-only file has no _float key, yet it is not the float control: no share
    member_only = {"membership/auc": 0.62, "membership/auc_baseline": 0.5}
    triplet = attack_triplet(member_only, BY_ATTACK["membership"], None, float_control=False)
    assert triplet[:2] == (0.62, 0.5) and math.isnan(triplet[2])
    assert math.isnan(leakage_share(*triplet))


def test_pareto_mask_hand_case() -> None:
    # (utility, leakage): a dominates c (more utility, less leakage); b and a trade off;
    # d equals b (both kept); e has a NaN (never on the front, never dominates)
    utility = np.array([0.9, 1.0, 0.8, 1.0, 2.0])
    leakage = np.array([0.2, 0.5, 0.3, 0.5, math.nan])
    assert pareto_mask(utility, leakage).tolist() == [True, True, False, True, False]
    # a point equal on one axis and worse on the other is dominated
    assert pareto_mask(np.array([1.0, 1.0]), np.array([0.1, 0.2])).tolist() == [True, False]
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        pareto_mask(np.zeros(2), np.zeros(3))


def test_least_leakage_at_bar_and_ties() -> None:
    utility = np.array([0.97, 0.99, 1.02, 1.01, 0.5])
    leakage = np.array([0.0, 0.4, 0.1, 0.1, math.nan])
    # 0.97 is under the bar; 0.1 is shared by indices 2 and 3: the more useful (1.02) wins
    assert least_leakage_at(utility, leakage, min_utility=0.98) == (0.1, 2)
    least, i = least_leakage_at(utility, leakage, min_utility=1.5)
    assert math.isnan(least) and i == -1
