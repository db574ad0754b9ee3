"""Attribute inference: AUC by hand, bites on leaky codes, prior baseline on blind codes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blind_release, lsh_release, make_records

from privacy.attribute import AttributeInference, macro_auc
from privacy.base import FloatRelease
from privacy.errors import PrivacyError


def test_auc_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    # positive 0.4 beats negative 0.1 only, positive 0.9 beats both: 3 of 4 pairs
    assert macro_auc(y, proba, np.array([0, 1])) == pytest.approx(0.75)


def test_binary_model_scores_its_second_class_when_no_victim_holds_the_first() -> None:
    """Aux held {0, 1}, the victims {1, 2}: column 0 has no positives, so the binary shortcut
    scored nothing and reported chance (0.5) for an attack that ranks every class-1 victim
    first. Class 2, unknown to the model, counts as negatives: AUC of column 1 = 1."""
    y = np.array([1, 1, 2, 2])
    proba = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.8, 0.2]])
    assert macro_auc(y, proba, np.array([0, 1])) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def recs():
    return make_records(n=(200, 150, 150), dim=32, spread=0.5)


@pytest.mark.parametrize("kind", ["float", "lsh1024"])
def test_bites(recs, kind: str) -> None:
    release = FloatRelease() if kind == "float" else lsh_release(recs["train"].x, 1024)
    out = AttributeInference(release).fit(recs["val"]).run({"test": recs["test"]})
    assert out["test/accuracy"] >= out["test/accuracy_baseline"] + 0.3
    assert out["test/auc"] >= 0.85


def test_blind_codes_fall_to_the_prior(recs) -> None:
    """Tolerance: 0.12 on accuracy (binomial sd 0.04 over 150 victims), 0.1 on AUC."""
    out = AttributeInference(blind_release(64)).fit(recs["val"]).run({"test": recs["test"]})
    assert abs(out["test/accuracy"] - out["test/accuracy_baseline"]) <= 0.12
    assert abs(out["test/auc"] - 0.5) <= 0.1


def test_single_class_aux_refused(recs) -> None:
    one = recs["val"].subset(np.flatnonzero(recs["val"].y == 0))
    with pytest.raises(PrivacyError, match="single attribute value"):
        AttributeInference(FloatRelease()).fit(one)


def test_binary_model_auc_does_not_depend_on_class_order_with_an_unknown_class() -> None:
    """Aux held {0, 1}, the victims {0, 1, 2}: the binary shortcut read column 0 only, and column
    0's AUC (class 0 against 1 and 2) differs from column 1's (class 1 against 0 and 2), so
    renaming 0 <-> 1 changed the number (1.0 vs 0.625). Both columns count: (1 + 5/8) / 2."""
    y = np.array([0, 0, 1, 1, 2, 2])
    p1 = np.array([0.1, 0.2, 0.8, 0.9, 0.85, 0.95])
    proba = np.c_[1 - p1, p1]
    # column 0: both class-0 victims (0.9, 0.8) above all four others -> 1
    # column 1: 0.8 beats 0.1, 0.2 (2 of 4); 0.9 beats 0.1, 0.2, 0.85 (3 of 4) -> 5/8
    got = macro_auc(y, proba, np.array([0, 1]))
    swapped = macro_auc(np.array([1, 1, 0, 0, 2, 2]), proba[:, ::-1], np.array([0, 1]))
    assert got == pytest.approx((1 + 5 / 8) / 2) and swapped == pytest.approx(got)


def test_auc_of_single_class_victims_is_left_out_not_chance(recs, caplog) -> None:
    """Every victim of one class: no class has both positives and negatives, so the AUC is
    undefined; it was reported as 0.5, exactly its baseline ("no leakage")."""
    y = np.array([1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert np.isnan(macro_auc(y, proba, np.array([0, 1])))
    one = recs["test"].subset(np.flatnonzero(recs["test"].y == 1))
    out = AttributeInference(FloatRelease()).fit(recs["val"]).run({"test": one})
    assert "test/auc" not in out and "test/auc_baseline" not in out
    assert out["test/balanced_accuracy_baseline"] == 1.0  # the other numbers stay
    assert "AUC left out" in caplog.text


def test_an_empty_victim_group_is_refused_by_every_attack_s_shared_run() -> None:
    """``Attack.run`` refuses an empty group for every attack that uses it (attribute: sklearn's
    balanced accuracy of nothing was NaN with a warning); the check lives once in privacy.base."""
    recs = make_records(n=(60, 60, 30), dim=8)
    attack = AttributeInference(FloatRelease()).fit(recs["val"])
    with pytest.raises(PrivacyError, match="attribute: the test victim group holds no records"):
        attack.run({"train": recs["train"], "test": recs["test"].subset(np.arange(0))})
