"""Anonymity sets: hand-computed set sizes per radius and per victim group."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.anonymity import Anonymity, set_sizes, summarise
from privacy.base import CodeRelease, FloatRelease, Records

CODES = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)


def test_set_sizes_by_hand() -> None:
    k = set_sizes(CODES, (0, 1, 2))
    assert k[0].tolist() == [2, 2, 1, 1, 1]
    assert k[1].tolist() == [3, 3, 4, 3, 2]
    assert k[2].tolist() == [4, 4, 5, 5, 3]
    s = summarise(k[0])
    assert s == {
        "k_min": 1.0, "k_median": 1.0, "share_unique": 0.6, "share_k_lt5": 1.0, "share_k_lt20": 1.0,
    }  # fmt: skip


def _groups(x: np.ndarray) -> dict[str, Records]:
    y = np.zeros(len(x), dtype=np.int64)
    return {
        "train": Records(split="train", index=np.arange(3), x=x[:3], y=y[:3]),
        "test": Records(split="test", index=np.arange(2), x=x[3:], y=y[3:]),
    }


def test_attack_reports_per_group_over_the_whole_release() -> None:
    x = CODES.astype(np.float32) * 2 - 1
    out = Anonymity(CodeRelease(lambda v: v > 0, 3)).run(_groups(x))
    assert out["all/r0/k_min"] == 1 and out["all/distinct"] == 4
    assert out["train/r0/share_unique"] == pytest.approx(1 / 3)
    assert out["test/r1/k_median"] == 2.5  # sizes 3 and 2, counted over all five records
    assert out["train/r2/k_min"] == 4 and out["all/k_min_baseline"] == 5


def test_constant_code_reaches_the_baseline_and_float_is_unique() -> None:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    const = Anonymity(CodeRelease(lambda v: np.zeros((len(v), 8), dtype=bool), 8)).run(_groups(x))
    assert const["all/r0/k_min"] == const["all/k_min_baseline"] == 5
    flt = Anonymity(FloatRelease()).run(_groups(x))
    assert flt["all/r0/share_unique"] == 1.0 and "all/r1/k_min" not in flt


def test_empty_group_and_negative_radius_are_refused() -> None:
    """Every set holds its own record (k >= 1): a negative radius reported k_min 0 and an empty
    group failed inside numpy."""
    from privacy.anonymity import AnonymityConfig
    from privacy.errors import PrivacyError

    x = CODES.astype(np.float32) * 2 - 1
    release = CodeRelease(lambda v: v > 0, 3)
    with pytest.raises(PrivacyError, match="radius -1 is negative"):
        Anonymity(release, AnonymityConfig(radii=(0, -1))).run(_groups(x))
    with pytest.raises(PrivacyError, match="radius -1 is negative"):
        set_sizes(CODES, (-1,))
    groups = _groups(x)
    groups["test"] = groups["test"].subset(np.arange(0))
    with pytest.raises(PrivacyError, match="test victim group holds no records"):
        Anonymity(release).run(groups)
