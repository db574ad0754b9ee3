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
