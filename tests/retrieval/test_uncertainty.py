"""The paired, class-stratified retention bootstrap: hand-computed points and exact intervals."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.metrics import accuracy, balanced_accuracy
from retrieval.uncertainty import bootstrap_retentions, retention_bootstrap


def test_point_is_the_plain_retention() -> None:
    y = np.array([0, 0, 0, 1])
    float_pred = np.array([0, 0, 0, 1])  # balanced accuracy 1
    codes = np.array([0, 0, 1, 1])  # recalls 2/3 and 1 -> 5/6
    r = retention_bootstrap(y, float_pred, codes, n_boot=50)
    assert r.point == pytest.approx(5 / 6)
    assert r.point == pytest.approx(balanced_accuracy(y, codes) / balanced_accuracy(y, float_pred))
    acc = retention_bootstrap(y, float_pred, codes, metric="accuracy", n_boot=50)
    assert acc.point == pytest.approx(accuracy(y, codes) / accuracy(y, float_pred))  # 3/4


def test_identical_predictions_have_retention_one_on_every_resample() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, y, (y + 1) % 3)
    r = retention_bootstrap(y, pred, pred, n_boot=300)
    assert (r.point, r.low, r.high, r.share_below) == (1.0, 1.0, 1.0, 0.0)
    assert r.verdict() == "meets"


def test_a_class_always_missed_gives_a_fixed_ratio() -> None:
    # stratified resampling keeps every class: codes miss all of class 1, float is perfect, so
    # every resample scores (1 + 0) / 2 against 1
    y = np.array([0] * 5 + [1] * 3)
    codes = np.zeros(8, dtype=int)
    r = retention_bootstrap(y, y, codes, n_boot=200)
    assert r.point == r.low == r.high == 0.5
    assert r.share_below == 1.0 and r.verdict() == "short"


def test_seeds_are_averaged_on_each_resample() -> None:
    y = np.array([0] * 4 + [1] * 4)
    perfect = y.copy()
    misses_class_1 = np.zeros(8, dtype=int)
    r = retention_bootstrap(y, y, np.stack([perfect, misses_class_1]), n_boot=100)
    assert r.point == r.low == r.high == pytest.approx(0.75)  # mean of 1 and 0.5


def test_one_extra_miss_is_within_the_noise_of_the_query_set() -> None:
    # 50 + 50 queries, float right on 40 of each; the codes miss one more image of class 0:
    # retention (39/50 + 40/50) / (2 * 0.8) = 0.9875 < 0.99, yet a resample leaves that image out
    # with probability (49/50)^50 = 0.364, and then the ratio is exactly 1
    y = np.repeat([0, 1], 50)
    float_pred = y.copy()
    float_pred[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]] ^= 1
    codes = float_pred.copy()
    codes[10] ^= 1
    r = retention_bootstrap(y, float_pred, codes, n_boot=4000, threshold=0.99, seed=3)
    assert r.point == pytest.approx(0.9875)
    assert r.high == 1.0 and r.low < r.point
    assert r.verdict() == "noise"
    assert r.share_below == pytest.approx(1 - (49 / 50) ** 50, abs=0.03)
    again = retention_bootstrap(y, float_pred, codes, n_boot=4000, threshold=0.99, seed=3)
    assert again == r  # seeded


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "macro_f1"}, "macro_f1"),
        ({"n_boot": 0}, "n_boot=0"),
        ({"level": 1.0}, "level=1.0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, match: str) -> None:
    y = np.array([0, 1])
    with pytest.raises(ValueError, match=match):
        retention_bootstrap(y, y, y, **kwargs)


def test_multilabel_and_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="single-label"):
        retention_bootstrap(np.eye(3, dtype=int), np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="do not match"):
        retention_bootstrap(np.array([0, 1, 1]), np.array([0, 1]), np.array([0, 1, 1]))


def test_every_metric_comes_from_the_same_resamples() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 80)
    float_pred = np.where(rng.random(80) < 0.7, y, (y + 1) % 3)
    codes = np.where(rng.random((2, 80)) < 0.6, y, (y + 2) % 3)
    both = bootstrap_retentions(y, float_pred, codes, n_boot=300, seed=5)
    for metric in ("balanced_accuracy", "accuracy"):
        alone = retention_bootstrap(y, float_pred, codes, metric=metric, n_boot=300, seed=5)
        assert both[metric] == alone
