"""The paired, class-stratified retention bootstrap: hand-computed points and exact intervals;
what a per-release bar can certify (:func:`clearing_retentions`) and the training noise it may
add (:func:`seed_variances`)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from retrieval.metrics import accuracy, balanced_accuracy
from retrieval.uncertainty import (
    bootstrap_retentions,
    clearing_retentions,
    retention_bootstrap,
    retention_draws,
    seed_variances,
)


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


def test_draws_are_joint_across_releases_and_nan_where_the_float_scores_zero() -> None:
    # class 0 has 3 images and the float KNN gets only the first right: a resample that leaves it
    # out scores the float at 0 (balanced accuracy (0 + 0) / 2), so that ratio is NaN
    y = np.array([0, 0, 0, 1, 1, 1])
    float_pred = np.array([0, 1, 1, 0, 0, 0])
    a = np.array([0, 0, 1, 0, 0, 1])
    got = retention_draws(y, float_pred, np.stack([a, a]), n_boot=2000, seed=4)
    point, ratios = got["balanced_accuracy"]
    assert point == pytest.approx(((2 / 3 + 1 / 3) / 2) / ((1 / 3) / 2))  # 3.0
    assert np.isnan(ratios).mean() == pytest.approx((2 / 3) ** 3, abs=0.03)
    # the same queries and seed give the same resamples, whatever the predictions
    again = retention_draws(y, float_pred, a, n_boot=2000, seed=4)["balanced_accuracy"][1]
    np.testing.assert_array_equal(again, ratios)
    other = retention_draws(y, float_pred, float_pred, n_boot=2000, seed=4)["balanced_accuracy"][1]
    np.testing.assert_array_equal(np.isnan(other), np.isnan(ratios))
    assert np.nanmax(np.abs(other - 1.0)) == 0.0
    # the interval drops those resamples and says how many it kept
    r = retention_bootstrap(y, float_pred, a, n_boot=2000, seed=4)
    assert r.n_boot == int((~np.isnan(ratios)).sum())
    assert r.low == pytest.approx(np.nanquantile(ratios, 0.025))


def test_clearing_retention_by_hand() -> None:
    # one release at 1.00 with resampled retentions 0.9, 1.0, 1.1: an estimate is
    # r + (ratio - 1), so r must be 0.98 + 0.1, 0.98 + 0 and 0.98 - 0.1 to clear 0.98
    needed = clearing_retentions(np.array([1.0]), np.array([[0.9, 1.0, 1.1]]))
    np.testing.assert_allclose(needed, [1.08, 0.98, 0.88])
    assert np.mean(needed <= 1.0) == pytest.approx(2 / 3)
    # two releases: per resample the worst one sets the bar; a NaN resample is dropped
    points = np.array([1.0, 0.95])
    ratios = np.array([[0.9, 1.0, 1.0], [0.95, 1.05, np.nan]])
    np.testing.assert_allclose(clearing_retentions(points, ratios), [1.08, 0.98])


def test_training_noise_alone_gives_the_normal_quantile_of_the_worst_release() -> None:
    # no query noise (every ratio equals its point) and m releases with independent training
    # noise of SE s: all clear the bar with probability p iff r >= bar + s * z(p ** (1 / m))
    m, s = 10, 0.03
    ratios = np.ones((m, 200_000))
    needed = clearing_retentions(np.ones(m), ratios, seed_se=s, seed=1)
    for p in (0.5, 0.8):
        expected = 0.98 + s * NormalDist().inv_cdf(p ** (1 / m))
        assert np.quantile(needed, p) == pytest.approx(expected, abs=0.001)
    single = clearing_retentions(np.ones(1), np.ones((1, 200_000)), seed_se=s, seed=1)
    assert np.quantile(single, 0.8) == pytest.approx(0.98 + s * 0.8416, abs=0.001)


def test_clearing_retention_refuses_mismatched_shapes_and_negative_noise() -> None:
    with pytest.raises(ValueError, match="points"):
        clearing_retentions(np.ones(2), np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"seed_se=-0\.1"):
        clearing_retentions(np.ones(2), np.ones((2, 5)), seed_se=-0.1)


def test_seed_variances_by_hand() -> None:
    # accuracy, 4 queries, float right on all (F = 1); seed a right on all, seed b misses q2 and q3:
    # retentions 1 and 0.5, total 0.125; interaction sum_q w_q² var_s = (1/16)(0.5 + 0.5) = 0.0625;
    # shift (0.125 - 0.0625) / (1 - 4/16) = 1/12
    y = np.zeros(4, dtype=int)
    codes = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    total, shift = seed_variances(y, y, codes)["accuracy"]
    assert (total, shift) == (pytest.approx(0.125), pytest.approx(1 / 12))
    # balanced accuracy, classes of 4 and 2: two seeds that differ on one query only (q4) differ
    # by interaction alone: total var([1, 0.75]) = 1/32 = (1/4)² * 0.5, shift 0
    y = np.array([0, 0, 0, 0, 1, 1])
    codes = np.array([y, [0, 0, 0, 0, 0, 1]])
    total, shift = seed_variances(y, y, codes)["balanced_accuracy"]
    assert total == pytest.approx(1 / 32) and shift == pytest.approx(0.0, abs=1e-15)
    # a float score of 0.5 doubles every retention: variances x 4
    half = np.array([0, 0, 1, 1, 0, 1])  # recalls 1/2 and 1/2
    assert seed_variances(y, half, codes)["balanced_accuracy"][0] == pytest.approx(4 / 32)


def test_seed_variances_total_is_the_variance_of_the_seed_retentions() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 70)
    float_pred = np.where(rng.random(70) < 0.7, y, (y + 1) % 3)
    codes = np.where(rng.random((4, 70)) < 0.6, y, (y + 2) % 3)
    got = seed_variances(y, float_pred, codes)
    for metric, fn in (("balanced_accuracy", balanced_accuracy), ("accuracy", accuracy)):
        per_seed = [fn(y, c) / fn(y, float_pred) for c in codes]
        assert got[metric][0] == pytest.approx(np.var(per_seed, ddof=1))


def _heads(rng: np.random.Generator, y: np.ndarray, shape: tuple, *, shift: float) -> np.ndarray:
    """Correct/wrong of heads on the queries ``y`` (2 classes; float right with 0.85 / 0.35):
    ``shift = 0``: every head gets each query right independently (query x seed noise only);
    ``shift > 0``: one draw for every head, each head moved by its own shift (no interaction)."""
    rec, a = np.array([0.85, 0.35]), np.array([0.9, 0.8])
    b = rec * (1 - a) / (1 - rec)  # code recall = float recall: true retention 1
    f_ok = rng.random(y.size) < rec[y]
    p = np.where(f_ok, a[y], b[y])
    if shift == 0:
        return f_ok, rng.random((*shape, y.size)) < p
    moved = np.clip(p + rng.normal(0, shift, (*shape, 1)), 0, 1)
    return f_ok, rng.random(y.size) < moved


def test_seed_variances_tell_interaction_from_shift() -> None:
    y = np.repeat([0, 1], [80, 40])
    rng = np.random.default_rng(7)
    for shift, share in ((0.0, 0.0), (0.05, 1.0)):
        totals, shifts = [], []
        for _ in range(300):
            f_ok, ok = _heads(rng, y, (3,), shift=shift)
            tot, sh = seed_variances(y, np.where(f_ok, y, 1 - y), np.where(ok, y, 1 - y))[
                "balanced_accuracy"
            ]
            totals.append(tot)
            shifts.append(sh)
        assert np.mean(shifts) / np.mean(totals) == pytest.approx(share, abs=0.12)


def test_bench_clearing_is_calibrated_when_seeds_get_different_queries_right() -> None:
    # 12 cells x 3 seeds whose true retention is 1 and whose seeds differ only by which queries
    # they get right: the share of fresh query sets and seeds on which every cell clears 0.98
    # (the truth) against the bench's estimate from one query set. Adding the whole seed SE to
    # the bootstrap (which resamples that noise already) said 0.09 for a truth of 0.18.
    from bench.bench_utility import clearing

    y = np.repeat([0, 1], [80, 40])
    m, s = 12, 3

    def ba(ok: np.ndarray) -> np.ndarray:
        return (ok[..., y == 0].mean(-1) + ok[..., y == 1].mean(-1)) / 2

    rng = np.random.default_rng(0)
    hits = []
    for _ in range(3000):
        f_ok, ok = _heads(rng, y, (m, s), shift=0.0)
        hits.append((ba(ok).mean(-1) / ba(f_ok) >= 0.98).all())
    truth = np.mean(hits)
    rng = np.random.default_rng(1)
    estimates = []
    for i in range(60):
        f_ok, ok = _heads(rng, y, (m, s), shift=0.0)
        fpred, cpred = np.where(f_ok, y, 1 - y), np.where(ok, y, 1 - y)
        f = {"balanced_accuracy": ba(f_ok), "y": y.tolist(), "pred": fpred.tolist()}
        sup = {
            c: [{"balanced_accuracy": ba(ok[c, j]), "pred": cpred[c, j].tolist()} for j in range(s)]
            for c in range(m)
        }
        drawn = [
            retention_draws(y, fpred, cpred[c], metrics=("balanced_accuracy",), n_boot=500, seed=i)[
                "balanced_accuracy"
            ]
            for c in range(m)
        ]
        *_, needed = clearing(sup, f, drawn, "balanced_accuracy", 0.98)
        estimates.append(np.mean(needed <= 1.0))
    assert 0.12 < truth < 0.24
    assert np.mean(estimates) == pytest.approx(truth, abs=0.04)


def test_seed_variances_refuse_one_seed_and_other_metrics() -> None:
    y = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="1 head seed"):
        seed_variances(y, y, y[None])
    with pytest.raises(ValueError, match="macro_f1"):
        seed_variances(y, y, np.stack([y, y]), metrics=("macro_f1",))


def test_bench_report_footer_names_the_merged_seeds_and_the_runs_k(tmp_path) -> None:
    # --merge of cells of seeds 3 and 4 said "mean over head seeds [0, 1, 2]" (the --seeds
    # default), and a run with --set knn.k=5 said "k=7" (written into the footer)
    import argparse
    import json

    from bench.bench_utility import merge_runs, write_outputs

    metrics = {"balanced_accuracy": 0.6, "accuracy": 0.7, "macro_f1": 0.6}
    cells = [
        {"features": "pixels", "dataset": "breastmnist", "method": "dpsh", "bits": b, "seed": s,
         **metrics, "distinct_codes": 10}
        for b in (12, 48) for s in (3, 4)
    ]  # fmt: skip
    floats = {"pixels/breastmnist": {**metrics, "dim": 4, "one_image": 0.0119}}
    src = tmp_path / "cells.json"
    src.write_text(json.dumps({"floats": floats, "cells": cells, "overrides": []}))
    args = argparse.Namespace(
        merge=[src], seeds=[0, 1, 2], bits=[12, 48], split="test", out=tmp_path / "r.md",
        json=None, overrides=[], jobs=1,
    )  # fmt: skip
    merge_runs(args, ["dpsh"])
    text = args.out.read_text()
    assert "mean over head seeds [3, 4];" in text and "(k=7," in text
    args.merge, args.overrides = None, ["knn.k=5"]
    fl = {("pixels", "breastmnist"): floats["pixels/breastmnist"]}
    write_outputs(args, cells, fl, ["dpsh"], 0.0, len(cells))
    assert "Hamming KNN (k=5," in args.out.read_text()
