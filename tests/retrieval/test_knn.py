"""Tie-aware KNN: hand-computed votes, order invariance and the classification metrics."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import pack_bits
from retrieval.errors import RetrievalError
from retrieval.evaluation import hamming_report
from retrieval.knn import (
    float_distance_chunks,
    knn_float,
    knn_hamming,
    knn_predict,
    tally_from_sorted,
    tie_aware_votes,
)
from retrieval.metrics import classification_metrics, confusion
from retrieval.ranking import RankingSpec
from retrieval.rerank import rerank
from retrieval.search import FloatIndex


def test_votes_split_ties_at_kth_distance() -> None:
    # distances to 5 items; k=3: item0 (d=0) counts 1, items 1..4 tie at d=1 and share 2 votes
    dist = np.array([[0.0, 1, 1, 1, 1]])
    onehot = np.eye(2)[[0, 1, 1, 0, 0]]
    votes = tie_aware_votes(dist, onehot, 3)
    assert votes.tolist() == [
        [1 + 2 * 2 / 4, 2 * 2 / 4]
    ]  # class0: 1 + 0.5 + 0.5, class1: 0.5 + 0.5


def test_prediction_is_independent_of_database_order() -> None:
    g = np.random.default_rng(0)
    db = g.random((200, 12)) > 0.5
    q = g.random((50, 12)) > 0.5
    labels = g.integers(0, 4, 200)
    base = knn_hamming(pack_bits(q), pack_bits(db), 12, labels, [7])[7]
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(200)
        again = knn_hamming(pack_bits(q), pack_bits(db[perm]), 12, labels[perm], [7])[7]
        assert np.array_equal(base, again)


def test_float_knn_matches_brute_force_without_ties() -> None:
    g = np.random.default_rng(1)
    db, q = g.normal(size=(60, 5)), g.normal(size=(20, 5))
    labels = g.integers(0, 3, 60)
    pred = knn_float(q, db, labels, [5])[5]
    d = ((q[:, None] - db[None]) ** 2).sum(-1)
    nn = np.argsort(d, axis=1)[:, :5]
    brute = np.array([np.bincount(labels[row], minlength=3).argmax() for row in nn])
    assert np.array_equal(pred, brute)


def test_cosine_and_multilabel_votes() -> None:
    db = np.array([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], dtype=np.uint8)
    pred = knn_float(np.array([[1.0, 0.05]]), db, labels, [2], metric="cosine")[2]
    assert pred.tolist() == [[True, False]]  # label 0: 2/2 votes, label 1: 1/2 (not a majority)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_vectors_are_refused_by_every_float_search(bad: float) -> None:
    """faiss answers a NaN row with id -1 (distance FLT_MAX), which voted with the label of the
    last database item; every float path now names the bad row instead."""
    g = np.random.default_rng(4)
    db, q = g.normal(size=(5, 3)), g.normal(size=(2, 3))
    labels = np.array([1, 0, 0, 0, 0])
    db_bad, q_bad = db.copy(), q.copy()
    db_bad[3, 1], q_bad[1, 0] = bad, bad
    for metric in ("euclidean", "cosine"):
        with pytest.raises(RetrievalError, match=r"1 database vector\(s\) .* \(first row 3\)"):
            knn_float(q, db_bad, labels, [5], metric=metric)
        with pytest.raises(RetrievalError, match=r"1 query vector\(s\) .* \(first row 1\)"):
            knn_float(q_bad, db, labels, [5], metric=metric)
        with pytest.raises(RetrievalError, match="database vector"):
            FloatIndex(db_bad, metric=metric)
        with pytest.raises(RetrievalError, match="query vector"):
            FloatIndex(db, metric=metric).search(q_bad, 2)
    codes = pack_bits(np.ones((5, 4), dtype=bool))  # all tied: the shortlist is every row
    with pytest.raises(RetrievalError, match="shortlisted database vector"):
        rerank(codes[:2], codes, 4, q, db_bad, shortlist=5)
    with pytest.raises(RetrievalError, match="query vector"):
        rerank(codes[:2], codes, 4, q_bad, db, shortlist=5)


def test_huge_finite_vectors_are_refused_before_float32_distances_overflow() -> None:
    """A finite row of 3e19 overflows a float32 squared distance: faiss answered every query with
    id -1 (voting with the last item's label), and a float32 norm of inf made the cosine row all
    zeros (distance 1 to everything). Every float path now names the row and the fix."""
    g = np.random.default_rng(5)
    db, q = g.normal(size=(5, 3)), g.normal(size=(2, 3))
    labels = np.array([1, 0, 0, 0, 0])
    db_big, q_big = db.copy(), q.copy()
    db_big[2], q_big[1] = 3e19, -3e19
    for metric in ("euclidean", "cosine"):
        with pytest.raises(RetrievalError, match=r"1 database vector\(s\) .*first row 2.*rescale"):
            knn_float(q, db_big, labels, [5], metric=metric)
        with pytest.raises(RetrievalError, match=r"1 query vector\(s\) .*first row 1"):
            FloatIndex(db, metric=metric).search(q_big, 2)
        with pytest.raises(RetrievalError, match="database vector"):
            list(float_distance_chunks(q, db_big, metric=metric))
    # just below the bound both metrics still search correctly
    db_ok = np.array([[9e18, 0, 0], [0, 9e18, 0]], dtype=np.float32)
    d, i = FloatIndex(db_ok, metric="cosine").search(np.array([[0, 2.0, 0]]), 1)
    assert i.tolist() == [[1]] and d[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert FloatIndex(db_ok).search(np.array([[0, 9e18, 0]]), 2)[1].tolist() == [[1, 0]]


def test_rerank_refuses_a_huge_shortlisted_row_by_its_database_id() -> None:
    """The shortlist is a ``[queries, R, D]`` block: the magnitude bound used to apply to 2-D
    arrays only, so a row of 1e19 passed, its float32 norm became inf and its cosine distance 1
    (ranked last instead of first). The block is now checked row by row, named by database id."""
    g = np.random.default_rng(6)
    db, q = g.normal(size=(5, 3)), g.normal(size=(2, 3))
    codes = pack_bits(np.ones((5, 4), dtype=bool))  # all tied: the shortlist is every row
    db_big = db.copy()
    db_big[3] = q[0] * 1e19  # the nearest row to query 0, scaled past the float32 bound
    with pytest.raises(
        RetrievalError, match=r"^1 shortlisted database vector\(s\) .*first row 3.*rescale"
    ):
        rerank(codes[:2], codes, 4, q, db_big, shortlist=5)
    db_ok = db.copy()
    db_ok[3] = q[0] * 1e18  # below the bound: found first, at cosine distance 0
    out = rerank(codes[:2], codes, 4, q, db_ok, shortlist=5)
    assert out.ids[0, 0] == 3 and out.dist[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_a_faiss_answer_of_id_minus_one_is_refused() -> None:
    """Defence in depth: should faiss still find fewer than k neighbours, the search names the
    query row instead of indexing labels with -1."""
    index = FloatIndex(np.eye(3))

    class Short:
        d, ntotal = 3, 3

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            ids = np.zeros((len(q), k), dtype=np.int64)
            ids[-1, -1] = -1
            return np.zeros((len(q), k), dtype=np.float32), ids

    index.index = Short()
    with pytest.raises(RetrievalError, match=r"id -1.*query row 1"):
        index.search(np.eye(3)[:2], 2)


def test_k_larger_than_database_is_an_error() -> None:
    with pytest.raises(ValueError, match="k=9"):
        tie_aware_votes(np.zeros((1, 3)), np.eye(3), 9)


def test_metrics_hand_computed() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * (2 / 3) / (4 / 3), 1.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert confusion(y_true, y_pred, 3).tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    ml = classification_metrics(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [1, 0]]))
    assert ml["accuracy"] == pytest.approx(0.5)


def test_multilabel_metrics_skip_undefined_rates_as_single_label_skips_absent_classes() -> None:
    # label 0 is positive in every query (no TNR), label 2 in none (no TPR, and no F1 unless
    # predicted): each counts by the rate it has, never as a zero
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]])
    perfect = classification_metrics(y, y.copy())
    assert perfect == {"balanced_accuracy": 1.0, "accuracy": 1.0, "macro_f1": 1.0}
    p = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]])
    m = classification_metrics(y, p)
    # label 0: TPR 3/4; label 1: TPR 1/2, TNR 1/2; label 2: TNR 3/4
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    # F1: label 0 = 2·3/(2·3 + 1) = 6/7, label 1 = 2·1/(2·1 + 1 + 1) = 1/2, label 2 (predicted
    # once, never true) = 0
    assert m["macro_f1"] == pytest.approx((6 / 7 + 1 / 2 + 0) / 3)
    none = np.zeros((3, 2), dtype=int)
    assert classification_metrics(none, none)["macro_f1"] == 1.0


def test_equal_votes_reached_by_different_sums_go_to_the_lowest_class() -> None:
    # k = 10: 6 items at distance 0 (classes 1, 2, 2, 1, 1, 1) are closer than the k-th distance
    # and 6 at distance 1 (classes 0, 2, 1, 2, 2, 2) share the other 4 votes (2/3 each). Exact
    # votes: class 0 2/3, class 1 4 + 2/3 = 14/3, class 2 2 + 4 * 2/3 = 14/3, so the tie goes to
    # class 1. In float32 the two sums round apart (4.6666665 < 4.666667), which picked class 2.
    dist = np.array(
        [1, 0, 0, 2, 2, 1, 3, 2, 1, 1, 1, 0, 3, 2, 0, 2, 2, 1, 0, 2, 3, 0], dtype=np.float32
    )
    y = np.array([0, 1, 2, 0, 1, 2, 2, 0, 1, 2, 2, 2, 2, 0, 1, 0, 0, 2, 1, 0, 1, 1])
    onehot = np.eye(3, dtype=np.float32)[y]
    votes = tie_aware_votes(dist[None], onehot, 10)[0]
    assert votes[2] > votes[1]  # the float votes alone would decide wrongly
    assert knn_predict([(slice(0, 1), dist[None])], y, [10], n_queries=1)[10].tolist() == [1]
    order = np.argsort(dist, kind="stable")
    tally = tally_from_sorted(dist[order][None], onehot[order][None], 10)
    assert tally.decide(10, multilabel=False).tolist() == [1]
    # the same distances as Hamming codes of 4 bits from an all-zero query
    codes = pack_bits(np.arange(4)[None, :] < dist[:, None])
    query = pack_bits(np.zeros((1, 4), dtype=bool))
    assert knn_hamming(query, codes, 4, y, [10])[10].tolist() == [1]
    spec = RankingSpec(map_at=(10,), precision_at=(10,))
    report = hamming_report(query, codes, 4, np.array([1]), y, [10], spec=spec)
    assert report.predictions[10].tolist() == [1]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_identical_database_rows_get_identical_float_distances(metric: str) -> None:
    """Three copies of one row (first, middle, last) and a one-query chunk (a test split of
    size 1 mod 256): torch's matrix-vector product rounded the tail columns differently, so the
    copies were not tied (measured: 9001 x 64, Euclidean) and the database order decided between
    them (mAP@all moved when the database was rotated)."""
    rng = np.random.default_rng(0)
    for n_db in (101, 1003, 9001):
        db = rng.standard_normal((n_db, 64)).astype(np.float32)
        db[-1] = db[n_db // 2] = db[0]
        for n_q in (1, 7):
            q = rng.standard_normal((n_q, 64)).astype(np.float32)
            for _, d in float_distance_chunks(q, db, metric=metric, chunk=256):
                assert (d[:, 0] == d[:, -1]).all() and (d[:, 0] == d[:, n_db // 2]).all()


def _label_paths(labels: np.ndarray):
    """Every KNN / ranking path over 3 float vectors (and their 2-bit sign codes) with ``labels``."""
    from retrieval.ranking import float_ranking
    from retrieval.rerank import rerank_knn

    # rows 0 and 1 are the query's two nearest by Euclidean and cosine distance and by their codes
    db = np.array([[1.0, 0.1], [1.0, -0.1], [-5.0, -5.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    cdb, cq = pack_bits(np.array([[0, 0], [0, 0], [1, 1]], bool)), pack_bits(np.zeros((1, 2), bool))
    q_labels = np.zeros((1, 2), dtype=int) if labels.ndim == 2 else np.zeros(1, dtype=int)
    spec = RankingSpec(map_at=(2,), precision_at=(2,))
    return {
        "knn_float": lambda: knn_float(q, db, labels, [2]),
        "knn_predict": lambda: knn_predict(float_distance_chunks(q, db), labels, [2], n_queries=1),
        "rerank_knn": lambda: rerank_knn(rerank(cq, cdb, 2, q, db, shortlist=3), labels, [2]),
        "knn_hamming": lambda: knn_hamming(cq, cdb, 2, labels, [2]),
        "float_ranking": lambda: float_ranking(q, db, q_labels, labels, spec=spec),
    }


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # a class id of -1 indexed the last class: knn_float / knn_predict / rerank_knn voted on it
        (np.array([-1, -1, 0]), r"non-negative int class ids, got -1 \(row 0\)"),
        # float ids: an IndexError deep in the one-hot step
        (np.array([0.0, 1.0, 1.0]), r"non-negative int class ids, got float64"),
        # multi-hot -1 (an "uncertain" finding) or 2: the Hamming and float paths disagreed
        (np.array([[-1, 1], [-1, 0], [0, 1]]), r"only 0 and 1, got -1 \(row 0, column 0\)"),
        (np.array([[1, 0], [0, 2], [0, 1]]), r"only 0 and 1, got 2 \(row 1, column 1\)"),
        (np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]), r"only 0 and 1, got nan \(row 1"),
    ],
)
@pytest.mark.parametrize(
    "path", ["knn_float", "knn_predict", "rerank_knn", "knn_hamming", "float_ranking"]
)
def test_bad_labels_are_refused_on_every_path(labels: np.ndarray, message: str, path: str) -> None:
    kind = "multi-hot labels" if labels.ndim == 2 else "labels"
    with pytest.raises(RetrievalError, match=f"^database {kind} must .*{message}"):
        _label_paths(labels)[path]()


def test_valid_labels_still_vote_on_every_path() -> None:
    """Class ids and 0/1 multi-hot labels (int or bool) pass the check: the two nearest of the
    query (rows 0 and 1) decide."""
    for labels, expected in (
        (np.array([1, 1, 0]), [1]),
        (np.array([[1, 0], [1, 1], [0, 1]]), [[True, False]]),  # label 1: 1 vote of 2, not > 1/2
        (np.array([[True, False], [True, True], [False, True]]), [[True, False]]),
    ):
        for name, run in _label_paths(labels).items():
            if name != "float_ranking":
                assert run()[2].tolist() == expected, name


def test_every_k_is_checked_by_knn_float() -> None:
    """Only max(ks) was checked: k=-1 predicted from the column counted from the end, k=0 was a
    numpy broadcast error."""
    g = np.random.default_rng(0)
    db, q, labels = g.normal(size=(50, 8)), g.normal(size=(4, 8)), g.integers(0, 3, 50)
    for ks in ([0, 3], [-1, 3], [3, 51]):
        bad = min(ks) if min(ks) < 1 else max(ks)
        with pytest.raises(RetrievalError, match=rf"^k={bad} must be between 1 and the database"):
            knn_float(q, db, labels, ks)


def test_negative_stride_views_give_the_results_of_their_copies() -> None:
    """``q[::-1]`` (negative strides) crashed torch.as_tensor in float_distance_chunks, and
    with it knn_predict and float_ranking."""
    from retrieval.ranking import float_ranking

    g = np.random.default_rng(0)
    db, q = g.normal(size=(20, 4)).astype(np.float32), g.normal(size=(5, 4)).astype(np.float32)
    y_db, y_q = g.integers(0, 2, 20), g.integers(0, 2, 5)
    spec = RankingSpec(map_at=(5,), precision_at=(5,))
    for view_q, view_db in ((q[::-1], db), (q[:, ::-1], db[:, ::-1]), (q, db[::-1])):
        copy_q, copy_db = view_q.copy(), view_db.copy()
        for metric in ("euclidean", "cosine"):
            got = [d for _, d in float_distance_chunks(view_q, view_db, metric=metric)]
            ref = [d for _, d in float_distance_chunks(copy_q, copy_db, metric=metric)]
            assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
        chunks = float_distance_chunks(view_q, view_db)
        assert np.array_equal(
            knn_predict(chunks, y_db, [3], n_queries=5)[3],
            knn_predict(float_distance_chunks(copy_q, copy_db), y_db, [3], n_queries=5)[3],
        )
        a = float_ranking(view_q, view_db, y_q, y_db, spec=spec).scalars
        assert a == float_ranking(copy_q, copy_db, y_q, y_db, spec=spec).scalars
