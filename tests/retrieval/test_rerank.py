"""Two-stage retrieval: with R = N it is float (cosine) KNN and float ranking; R < k is an error."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import pack_bits, unpack_bits
from retrieval.errors import RetrievalError
from retrieval.knn import knn_float
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
