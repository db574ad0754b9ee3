"""Two-stage retrieval: with R = N it is float (cosine) KNN and float ranking; R < k is an error."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import pack_bits, unpack_bits
from retrieval.errors import RetrievalError
from retrieval.knn import knn_float
from retrieval.metrics import multilabel_relevance, multilabel_relevance_rows
from retrieval.ranking import RankingSpec, float_ranking
from retrieval.rerank import rerank, rerank_knn, rerank_ranking
from retrieval.search import HammingIndex


def _data(seed: int = 0):
    g = np.random.default_rng(seed)
    db, q = g.normal(size=(120, 8)), g.normal(size=(15, 8))
    bits_db, bits_q = db[:, :6] > 0, q[:, :6] > 0  # sign codes of the first 6 dims: many ties
    return (
        g,
        db,
        q,
        pack_bits(bits_db),
        pack_bits(bits_q),
        g.integers(0, 3, 120),
        g.integers(0, 3, 15),
    )


def test_full_shortlist_equals_float_cosine_knn_and_ranking() -> None:
    _, db, q, cdb, cq, y_db, y_q = _data()
    res = rerank(cq, cdb, 6, q, db, shortlist=120)
    ks = [1, 5, 9]
    two = rerank_knn(res, y_db, ks)
    flt = knn_float(q, db, y_db, ks, metric="cosine")
    for k in ks:
        assert np.array_equal(two[k], flt[k])
    spec = RankingSpec(map_at=(10,), precision_at=(5,), radius=None)
    a = rerank_ranking(res, HammingIndex(cdb, 6), cq, y_q, y_db, spec=spec).scalars
    b = float_ranking(q, db, y_q, y_db, metric="cosine", spec=spec).scalars
    for name in ("map_all", "map_at_10", "precision_at_5"):
        assert a[name] == pytest.approx(b[name], abs=1e-6), name


@pytest.mark.parametrize("shortlist", [120, 30])
def test_multilabel_two_stage_ranking_counts_empty_label_pairs_as_relevant(shortlist: int) -> None:
    """Multi-label relevance is one rule everywhere: a shared label, or no label on either side
    (``multilabel_relevance``). With R = N the two-stage ranking is the float cosine ranking,
    queries without a label included; with R < N every group stays consistent."""
    g, db, q, cdb, cq, _, _ = _data(2)
    y_db = (g.random((120, 3)) < 0.3).astype(np.int64)
    y_q = (g.random((15, 3)) < 0.3).astype(np.int64)
    y_db[:10], y_q[:3] = 0, 0  # "no finding" images on both sides
    res = rerank(cq, cdb, 6, q, db, shortlist=shortlist)
    spec = RankingSpec(map_at=(10,), precision_at=(5,), radius=None)
    a = rerank_ranking(res, HammingIndex(cdb, 6), cq, y_q, y_db, spec=spec).scalars
    if shortlist == 120:
        b = float_ranking(q, db, y_q, y_db, metric="cosine", spec=spec).scalars
        for name in ("map_all", "map_at_10", "precision_at_5"):
            assert a[name] == pytest.approx(b[name], abs=1e-6), name
    # the first 5 are the shortlist's 5 cosine-nearest (continuous distances: no ties)
    top = res.ids[:, :5]
    hand = np.take_along_axis(multilabel_relevance(y_q, y_db), top, axis=1).mean()
    assert a["precision_at_5"] == pytest.approx(hand, abs=1e-9)


def test_relevance_rows_match_the_full_relevance_matrix() -> None:
    g = np.random.default_rng(3)
    y_q, y_db = (g.random((6, 4)) < 0.3), (g.random((20, 4)) < 0.3)
    y_q[0], y_db[:4] = False, False
    ids = g.integers(0, 20, size=(6, 7))
    full = multilabel_relevance(y_q, y_db)
    assert np.array_equal(
        multilabel_relevance_rows(y_q, y_db[ids]), np.take_along_axis(full, ids, axis=1)
    )


def test_shortlist_is_the_hamming_nearest_then_cosine_order() -> None:
    _, db, q, cdb, cq, _, _ = _data(1)
    res = rerank(cq, cdb, 6, q, db, shortlist=10)
    ham = (unpack_bits(cq, 6)[:, None] != unpack_bits(cdb, 6)[None]).sum(-1)
    kth = np.sort(ham, axis=1)[:, 9]
    assert (np.take_along_axis(ham, res.ids, axis=1) <= kth[:, None]).all()
    assert (np.diff(res.dist, axis=1) >= 0).all()


def test_shortlist_smaller_than_k_is_an_error() -> None:
    _, db, q, cdb, cq, _, _ = _data()
    with pytest.raises(RetrievalError, match="R=3 is smaller than k=5"):
        rerank(cq, cdb, 6, q, db, shortlist=3, k=5)
    res = rerank(cq, cdb, 6, q, db, shortlist=3)
    with pytest.raises(RetrievalError, match="k=5 exceeds the shortlist"):
        rerank_knn(res, np.zeros(120, dtype=int), [5])


@pytest.mark.parametrize("multilabel", [False, True])
def test_votes_in_query_blocks_equal_the_whole_set(
    monkeypatch: pytest.MonkeyPatch, multilabel: bool
) -> None:
    """The label block is gathered per query block (it was [all queries, R, classes] at once:
    1.2 GiB at ChestMNIST scale); blocks of 1, 2 and 4 queries decide as the whole set does."""
    import retrieval.rerank as rr

    g, db, q, cdb, cq, y_db, _ = _data()
    labels = (g.random((120, 3)) < 0.4).astype(np.uint8) if multilabel else y_db
    res = rerank(cq, cdb, 6, q, db, shortlist=40)
    whole = rerank_knn(res, labels, [1, 5, 9])
    for queries_per_block in (1, 2, 4):
        monkeypatch.setattr(rr, "VOTE_BLOCK", 40 * 3 * queries_per_block)
        blocked = rerank_knn(res, labels, [1, 5, 9])
        assert all(np.array_equal(blocked[k], whole[k]) for k in (1, 5, 9))


def test_k_below_one_and_mismatched_embeddings_are_refused() -> None:
    """rerank_knn checked only k > R: k=-2 voted on the column counted from the end, k=0 was a
    numpy broadcast error; float queries of another dimension were a broadcast error too."""
    _, db, q, cdb, cq, y_db, _ = _data()
    res = rerank(cq, cdb, 6, q, db, shortlist=10)
    for k in (0, -2):
        with pytest.raises(RetrievalError, match=rf"^k={k} must be >= 1"):
            rerank_knn(res, y_db, [k, 3])
    assert rerank_knn(res, y_db, [1, 10])[10].shape == (15,)  # 1 and R itself are fine
    with pytest.raises(
        RetrievalError, match=r"float queries \(15, 7\) and float database \(120, 8\)"
    ):
        rerank(cq, cdb, 6, q[:, :7], db, shortlist=10)


@pytest.mark.parametrize("shortlist", [0, 121])
def test_a_shortlist_outside_the_database_is_named_as_the_shortlist(shortlist: int) -> None:
    """R > N (or R < 1) was refused as "k=121 ... lower k (params knn.k / knn.k_sweep)": the
    wrong parameter to change. R = N itself is fine (float cosine KNN)."""
    _, db, q, cdb, cq, _, _ = _data()
    with pytest.raises(
        RetrievalError,
        match=rf"^shortlist R={shortlist} must be between 1 and the database size 120; "
        r"set retrieval\.shortlist in that range",
    ):
        rerank(cq, cdb, 6, q, db, shortlist=shortlist)
    assert rerank(cq, cdb, 6, q, db, shortlist=120).ids.shape == (15, 120)
