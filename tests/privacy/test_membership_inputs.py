"""Membership inference: LiRA masks given as 0/1, and the non-members left after training copies
are dropped decide the input checks (hand-computed values, refusals before any shadow trains)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_records

from hashers import registry as methods
from hashers.base import HeadSpec
from hashers.trainer import FitConfig
from privacy.base import CodeRelease
from privacy.errors import PrivacyError
from privacy.membership import MembershipConfig, MembershipInference, lira_scores


def test_lira_reads_0_1_in_masks_like_bool() -> None:
    """``~`` on an int mask is a bitwise not (1 -> -2, 0 -> -1): every score counted as OUT and
    the OUT count went negative, so the ranking of the two records below was reversed
    ([0.75, 4.26] instead of [1.31, 0.81]) without an error."""
    shadow = np.array([[1.0, 0.0], [1.0, 3.0]])
    in_mask = np.array([[True, False], [False, True]])
    target = np.array([1.0, 2.0])
    # the hand case of test_membership.py::test_lira_by_hand
    want = [2 - np.log(2), 1.5 - np.log(2)]
    assert lira_scores(target, shadow, in_mask) == pytest.approx(want)
    assert lira_scores(target, shadow, in_mask.astype(int)) == pytest.approx(want)
    assert lira_scores(target, shadow, in_mask.astype(float)) == pytest.approx(want)
    with pytest.raises(PrivacyError, match=r"in_mask holds \[0, 2\]; pass bool or 0/1"):
        lira_scores(target, shadow, in_mask.astype(int) * 2)


def test_lira_refuses_masks_and_targets_of_another_shape() -> None:
    """A ``[N, 1]`` mask was refused as "every record needs at least one IN and one OUT shadow
    score" (it has the right IN / OUT split, of the wrong shape), a ``[1, M]`` mask failed with
    numpy's ``IndexError: boolean index did not match``, a target of another length with a
    broadcasting ``ValueError``; each now names the three shapes."""
    shadow = np.array([[1.0, 0.0], [1.0, 3.0]])
    with pytest.raises(PrivacyError, match=r"in_mask \(2, 1\) must be \[N\], \[N, M\] and"):
        lira_scores(np.array([1.0, 2.0]), shadow, np.array([[True], [False]]))
    with pytest.raises(PrivacyError, match=r"in_mask \(1, 2\) must be"):
        lira_scores(np.array([1.0, 2.0]), shadow, np.array([[True, False]]))
    with pytest.raises(PrivacyError, match=r"LiRA: target \(3,\), shadow \(2, 2\)"):
        lira_scores(np.zeros(3), shadow, np.array([[True, False], [False, True]]))


def _attack(candidates: int, k: int, trained: list[int]) -> MembershipInference:
    """LSH shadows (codes independent of the records: only the checks are under test) that record
    the seed of every shadow built."""
    spec = HeadSpec(in_dim=8, n_bits=16, n_classes=3)

    def make_head(seed: int):
        trained.append(seed)
        return methods.build("lsh", spec, seed=0)

    return MembershipInference(
        CodeRelease.from_head(methods.build("lsh", spec, seed=0)),
        MembershipConfig(shadow_heads=2, candidates=candidates, workers=1),
        make_head=make_head, fit_config=FitConfig(epochs=1, progress=False, k=k), n_classes=3,
    )  # fmt: skip


def test_every_test_record_a_training_copy_is_refused_naming_it() -> None:
    """With every test record a copy of a training image no non-member is left: run failed with
    numpy's ``zero-size array to reduction operation maximum`` after the checks had passed."""
    recs = make_records(n=(40, 10, 4), dim=8)
    test = dataclasses.replace(recs["test"], train_copy=np.ones(4, dtype=bool))
    trained: list[int] = []
    attack = _attack(5, 3, trained)
    victims = {"train": recs["train"], "test": test}
    with pytest.raises(
        PrivacyError,
        match=r"^membership: all 4 test records hold an image byte-identical to a training image "
        r".*no non-member is left to score; drop 'membership' from attack.attacks",
    ):
        attack.check_inputs(recs["val"], victims)
    with pytest.raises(PrivacyError, match="no non-member is left"):
        attack.fit(recs["val"]).run(victims)
    assert trained == []


def test_shadow_halves_count_the_non_members_left_after_training_copies() -> None:
    """10 aux records, 4 test records of which 3 are training copies: 1 candidate pair is left,
    so each shadow trains on (10 + 2) // 2 = 6 rows < k = 7. The check counted the 4 test records
    ((10 + 8) // 2 = 9 rows), passed, and the trainer's ``HashingError: k=7 exceeds the 6 rows of
    the KNN database; lower k`` came from inside the first shadow."""
    recs = make_records(n=(40, 10, 4), dim=8)
    test = dataclasses.replace(recs["test"], train_copy=np.array([True, True, True, False]))
    victims = {"train": recs["train"], "test": test}
    trained: list[int] = []
    attack = _attack(5, 7, trained)
    with pytest.raises(
        PrivacyError,
        match=r"^membership: each shadow head trains on half of the 10 aux records and 2 "
        r"candidates \(6 rows\), fewer than the k=7 ",
    ):
        attack.check_inputs(recs["val"], victims)
    with pytest.raises(PrivacyError, match=r"2 candidates \(6 rows\)"):
        attack.fit(recs["val"]).run(victims)
    assert trained == []
    # k = 6 fits the 6 rows: the attack runs on the one pair left
    out = _attack(5, 6, trained).fit(recs["val"]).run(victims)
    assert out["n_members"] == out["n_nonmembers"] == 1.0
    assert out["n_nonmembers_dropped_duplicates"] == 3.0 and len(trained) == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [("shadow_heads", 4.0), ("shadow_heads", 2.5), ("candidates", 2.5), ("candidates", True),
     ("stability_queries", 2.5), ("workers", 1.5)],
)  # fmt: skip
def test_counts_that_are_not_whole_numbers_are_refused_naming_them(key: str, value: object) -> None:
    """A float count was accepted and failed once the attack ran, as numpy's or range's
    ``TypeError: 'float' object cannot be interpreted as an integer`` (``candidates=True`` ran
    one candidate pair)."""
    with pytest.raises(PrivacyError, match=rf"^membership: {key}={value!r} must be a whole number"):
        MembershipConfig(**{key: value})
    assert MembershipConfig(shadow_heads=np.int64(4), workers=None).shadow_heads == 4
