"""Tie-aware ranking metrics against brute-force enumeration of every order within ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from retrieval.codes import pack_bits
from retrieval.ranking import (
    RankingSpec,
    ap_all,
    ap_at,
    expected_relevant_at,
    groups_from_sorted,
    harmonic,
    ranking_from_counts,
)
from retrieval.search import HammingIndex


def _orders(dist: np.ndarray, relevant: np.ndarray):
    """Every ranking of the items that respects the distances (all orders within ties)."""
    groups = [relevant[dist == d] for d in np.unique(dist)]
    for perm in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate(perm).astype(float)


def _ap(ranked: np.ndarray, cutoff: int | None = None) -> float:
    top = ranked if cutoff is None else ranked[:cutoff]
    hits = np.cumsum(top)
    prec = hits / np.arange(1, len(top) + 1)
    return float((prec * top).sum() / top.sum()) if top.sum() else 0.0


def _expected(fn, dist, relevant) -> float:
    vals = [fn(r) for r in _orders(dist, relevant)]
    return float(np.mean(vals))


def _counts(dist: np.ndarray, relevant: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    tot = np.array([[np.sum(dist == d) for d in range(n_groups)]])
    rel = np.array([[np.sum(relevant[dist == d]) for d in range(n_groups)]])
    return tot, rel


CASES = [  # distances with heavy ties, relevance
    (np.array([0, 1, 1, 1, 2, 2, 3, 3]), np.array([1, 0, 1, 1, 0, 1, 0, 1])),
    (np.array([1, 1, 1, 1, 1, 1, 1, 1]), np.array([1, 0, 0, 1, 0, 0, 0, 0])),
    (np.array([0, 0, 0, 2, 2, 2, 2, 4]), np.array([0, 0, 1, 1, 1, 0, 1, 0])),
    (np.array([0, 1, 2, 3, 3, 3, 3, 3]), np.array([0, 0, 0, 0, 0, 0, 0, 0])),
]


@pytest.mark.parametrize(("dist", "relevant"), CASES)
def test_closed_forms_equal_enumeration(dist: np.ndarray, relevant: np.ndarray) -> None:
    tot, rel = _counts(dist, relevant, 5)
    harm = harmonic(len(dist))
    assert ap_all(tot, rel, harm)[0] == pytest.approx(_expected(_ap, dist, relevant))
    for m in (1, 2, 3, 4, 5, 7, 8, 10):
        want = _expected(lambda r, m=m: _ap(r, m), dist, relevant)
        assert ap_at(tot, rel, m, harm)[0] == pytest.approx(want), m
        hits = _expected(lambda r, m=m: r[:m].sum(), dist, relevant)
        assert expected_relevant_at(tot, rel, m)[0] == pytest.approx(hits)


def test_hand_computed_tie_group() -> None:
    # two items tied at rank 1-2, one relevant: AP = (1 + 1/2) / 2
    harm = harmonic(2)
    assert ap_all(np.array([[2]]), np.array([[1]]), harm)[0] == pytest.approx(0.75)
    # three tied, two relevant: orders 110 -> 1, 101 -> (1 + 2/3)/2, 011 -> (1/2 + 2/3)/2
    want = (1 + (1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 3
    assert ap_all(np.array([[3]]), np.array([[2]]), harmonic(3))[0] == pytest.approx(want)


def test_multilabel_codes_end_to_end_against_enumeration() -> None:
    # 3-bit codes: 8 database items fall into few distance groups; relevance = a shared label
    g = np.random.default_rng(4)
    db = g.random((8, 3)) > 0.5
    q = g.random((3, 3)) > 0.5
    y_db = g.random((8, 3)) > 0.5
    y_q = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    index = HammingIndex(pack_bits(db), 3)
    spec = RankingSpec(map_at=(3,), precision_at=(2, 5), radius=1, pr_points=8)
    blocks = [(c.tot, c.rel) for c in index.counts(pack_bits(q), y_db, y_q)]
    report = ranking_from_counts(blocks, 8, spec=spec)
    dist = (q[:, None] != db[None]).sum(-1)
    rel = (y_q.astype(int) @ y_db.T.astype(int)) > 0
    brute = {
        "map_all": np.mean([_expected(_ap, dist[i], rel[i]) for i in range(3)]),
        "map_at_3": np.mean([_expected(lambda r: _ap(r, 3), dist[i], rel[i]) for i in range(3)]),
        "precision_at_5": np.mean(
            [_expected(lambda r: r[:5].sum() / 5, dist[i], rel[i]) for i in range(3)]
        ),
    }
    for name, want in brute.items():
        assert report.scalars[name] == pytest.approx(want), name
    within = [(rel[i][dist[i] <= 1].mean() if (dist[i] <= 1).any() else 0.0) for i in range(3)]
    assert report.scalars["precision_radius_1"] == pytest.approx(np.mean(within))
    last = report.pr_rank[-1]
    assert last["cutoff"] == 8 and last["recall"] == pytest.approx(1.0)


def test_result_does_not_depend_on_database_order() -> None:
    g = np.random.default_rng(1)
    db, q = g.random((300, 6)) > 0.5, g.random((20, 6)) > 0.5
    y_db, y_q = g.integers(0, 3, 300), g.integers(0, 3, 20)
    perm = g.permutation(300)

    def run(codes, labels):
        index = HammingIndex(pack_bits(codes), 6)
        blocks = [(c.tot, c.rel) for c in index.counts(pack_bits(q), labels, y_q)]
        return ranking_from_counts(blocks, 300).scalars

    a, b = run(db, y_db), run(db[perm], y_db[perm])
    assert a == pytest.approx(b)
    assert set(a) >= {
        "map_all",
        "map_at_1000",
        "map_at_10",
        "precision_at_10",
        "precision_radius_2",
    }


def test_float_groups_from_sorted_distances() -> None:
    dist = np.array([[0.5, 0.1, 0.5, 0.3, 0.1]])
    rel = np.array([[True, False, False, True, True]])
    tot, r = groups_from_sorted(dist, rel)
    assert tot.tolist() == [[2, 1, 2, 0, 0]] and r.tolist() == [[1, 1, 1, 0, 0]]
    want = _expected(_ap, dist[0], rel[0].astype(int))
    assert ap_all(tot, r, harmonic(5))[0] == pytest.approx(want)
    assert math.isclose(
        expected_relevant_at(tot, r, 2)[0], _expected(lambda x: x[:2].sum(), dist[0], rel[0])
    )


def test_hypergeometric_pmf_equals_scipy_and_sums_to_one() -> None:
    from scipy.stats import hypergeom

    from retrieval.ranking import hypergeom_pmf

    g = np.random.default_rng(0)
    total = g.integers(1, 300, 4000)
    good, draws = g.integers(0, total + 1), g.integers(0, total + 1)
    x = g.integers(-2, 300, 4000)  # off the support too: probability 0
    ours = hypergeom_pmf(x, total, good, draws)
    np.testing.assert_allclose(
        ours, np.nan_to_num(hypergeom.pmf(x, total, good, draws)), atol=1e-12
    )
    # the whole support of one law, by hand: 5 items, 2 relevant, 3 drawn -> 1/10, 6/10, 3/10
    np.testing.assert_allclose(hypergeom_pmf(np.arange(4), 5, 2, 3), [0.1, 0.6, 0.3, 0.0])
    t = g.integers(1, 60, 50)
    laws = (t[:, None], g.integers(0, t + 1)[:, None], g.integers(0, t + 1)[:, None])
    np.testing.assert_allclose(hypergeom_pmf(np.arange(61)[None, :], *laws).sum(axis=1), 1.0)


def test_unlabelled_multilabel_query_finds_unlabelled_items_relevant() -> None:
    from retrieval.ranking import RankingSpec, float_ranking, hamming_ranking

    spec = RankingSpec(map_at=(3,), precision_at=(1,), radius=1, pr_points=3)
    # database: 0000 (no label), 1111 (label 0), 0001 (no label); query 0000 (no label)
    bits = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=bool)
    y_db = np.array([[0, 0], [1, 0], [0, 0]], dtype=np.uint8)
    q, y_q = bits[:1], np.array([[0, 0]], dtype=np.uint8)
    # relevant: items 0 (distance 0) and 2 (distance 1) -> AP@all = (1/1 + 2/2) / 2 = 1
    ham = hamming_ranking(pack_bits(q), pack_bits(bits), 4, y_q, y_db, spec=spec)
    assert ham.scalars["map_all"] == pytest.approx(1.0)
    flt = float_ranking(q.astype(np.float32), bits.astype(np.float32), y_q, y_db, spec=spec)
    assert flt.scalars["map_all"] == pytest.approx(1.0)
    # a labelled query is still relevant only to items sharing its label: item 1 alone
    ham1 = hamming_ranking(pack_bits(bits[1:2]), pack_bits(bits), 4, y_db[1:2], y_db, spec=spec)
    assert ham1.scalars["map_all"] == pytest.approx(1.0)
    assert ham1.scalars["precision_at_1"] == pytest.approx(1.0)


def test_a_cut_off_listed_twice_is_refused_not_summed_twice() -> None:
    """``map_at=(10, 10)`` summed each query's AP@10 twice into one metric: map_at_10 = 2.0."""
    from retrieval.errors import RetrievalError
    from retrieval.ranking import hamming_ranking

    with pytest.raises(RetrievalError, match=r"^map_at\[1\]: 10 is listed twice \(entry 0 too\)"):
        RankingSpec(map_at=(10, 10), precision_at=(1,))
    with pytest.raises(RetrievalError, match=r"^precision_at\[2\]: 1 is listed twice"):
        RankingSpec(map_at=(10,), precision_at=(1, 5, 1))
    # one query of class 0; the database: class 0 at distance 0, class 1 at distance 1 -> AP 1
    db = pack_bits(np.array([[True, False], [False, False]]))
    q = pack_bits(np.array([[True, False]]))
    spec = RankingSpec(map_at=(10,), precision_at=(1,), radius=0)
    rep = hamming_ranking(q, db, 2, np.array([0]), np.array([0, 1]), spec=spec)
    assert rep.scalars["map_at_10"] == 1.0 and rep.scalars["precision_at_1"] == 1.0


def test_rank_cutoffs_run_from_one_to_the_database_and_bad_specs_are_refused() -> None:
    """The docstring promised ``n_db`` in every PR curve, but 1 point gave [1] and 0 points [];
    a radius of -1 scored an always-empty ball."""
    from retrieval.errors import RetrievalError
    from retrieval.ranking import RankingAccumulator, rank_cutoffs

    assert rank_cutoffs(100, 2).tolist() == [1, 100]
    assert rank_cutoffs(100, 3).tolist() == [1, 10, 100]
    assert rank_cutoffs(1, 40).tolist() == [1]
    for points in (1, 0):
        with pytest.raises(RetrievalError, match=f"pr_points={points} must be >= 2"):
            rank_cutoffs(100, points)
        with pytest.raises(RetrievalError, match=f"pr_points={points} must be >= 2"):
            RankingSpec(map_at=(1,), precision_at=(1,), pr_points=points)
    with pytest.raises(RetrievalError, match=r"radius=-1 must be >= 0"):
        RankingSpec(map_at=(1,), precision_at=(1,), radius=-1)
    with pytest.raises(RetrievalError, match=r"the database is empty \(n_db=0\)"):
        RankingAccumulator(0, RankingSpec(map_at=(), precision_at=()))


def test_ap_at_in_row_sub_blocks_is_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    """AP@M held [block, M + 1] float64 terms at once (3.6 GB for 4096 queries at mAP@20000); the
    rows now go in sub-blocks of at most AP_AT_ELEMS entries, with the same x grid in each."""
    import retrieval.ranking as R

    g = np.random.default_rng(4)
    tot = g.integers(0, 60, (40, 7))
    tot[:, -1] += 400 - tot.sum(axis=1)  # every row: 400 items, heavy ties
    rel = g.integers(0, tot + 1)
    harm = harmonic(400)
    whole = {m: ap_at(tot, rel, m, harm) for m in (1, 9, 57, 233, 400)}
    for cap in (1, 5, 300):
        monkeypatch.setattr(R, "AP_AT_ELEMS", cap)
        for m, ref in whole.items():
            assert np.array_equal(ap_at(tot, rel, m, harm), ref), (cap, m)


def test_hypergeometric_pmf_stays_within_the_stated_bound_at_large_totals() -> None:
    """The docstring claimed 1e-12 against scipy; the difference grows with ``total`` (1.8e-10
    measured below 200,000 items, near the mode): the stated 5e-10 bound holds there."""
    from scipy.stats import hypergeom

    from retrieval.ranking import hypergeom_pmf

    g = np.random.default_rng(1)
    total = g.integers(100_000, 200_000, 3000)
    good, draws = g.integers(0, total + 1), g.integers(0, total + 1)
    mode = (draws + 1) * (good + 1) // (total + 2)  # where the probabilities are largest
    x = mode + g.integers(-3, 4, 3000)
    ours = hypergeom_pmf(x, total, good, draws)
    theirs = np.nan_to_num(hypergeom.pmf(x, total, good, draws))
    assert theirs.max() > 1e-3  # the check covers sizeable probabilities
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-10)


def test_float_ranking_checks_its_input_like_the_float_index() -> None:
    """float_ranking had none of FloatIndex's checks: a dimension mismatch was a torch
    RuntimeError, an empty database "Geometric sequence cannot include zero", class-id queries
    against multi-hot database labels a numpy AxisError."""
    from retrieval.errors import RetrievalError
    from retrieval.ranking import float_ranking

    g = np.random.default_rng(0)
    db, q = g.normal(size=(6, 4)), g.normal(size=(3, 4))
    spec = RankingSpec(map_at=(2,), precision_at=(2,), radius=None)
    y_db, y_q = g.integers(0, 2, 6), g.integers(0, 2, 3)
    with pytest.raises(RetrievalError, match=r"queries have shape \(3, 3\).*dimension 4"):
        float_ranking(q[:, :3], db, y_q, y_db, spec=spec)
    with pytest.raises(RetrievalError, match=r"the float database is empty \(shape \(0, 4\)\)"):
        float_ranking(q, db[:0], y_q, y_db[:0], spec=spec)
    multi = (g.random((6, 3)) < 0.5).astype(int)
    with pytest.raises(RetrievalError, match=r"query labels \(3,\) and database labels \(6, 3\)"):
        float_ranking(q, db, y_q, multi, spec=spec)
    with pytest.raises(RetrievalError, match=r"query labels \(3, 6\) and database labels \(6,\)"):
        float_ranking(q, db, (g.random((3, 6)) < 0.5).astype(int), y_db, spec=spec)
