"""Float re-ranking of multi-table LSH (retrieval.lsh.multi_table_knn): copies of one database row
are one tie, broken by the lower index; NaN or infinite float vectors are refused, not ranked."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import lsh as L
from retrieval.errors import RetrievalError


def _all_candidates(n_q: int, n_db: int) -> tuple[np.ndarray, np.ndarray]:
    """One table, every code equal: every database row is every query's candidate."""
    return np.zeros((1, n_q, 2), dtype=bool), np.zeros((1, n_db, 2), dtype=bool)


@pytest.mark.parametrize("rerank", ["cosine", "euclidean"])
def test_copies_of_one_row_get_one_distance_and_keep_index_order(rerank: str) -> None:
    """The cosine re-rank took ``dx[c] @ q`` (a BLAS matrix-vector product), which rounds its tail
    rows differently: of 5 copies of the nearest row, k = 1 returned row 4, not row 0 (the
    documented tie rule: the lower database index). Each copy must get the same distance, and
    the copies must come in index order, whatever D and the number of copies."""
    g = np.random.default_rng(0)
    for dim in (8, 16, 64):
        for n in (5, 9, 17, 33):
            db = np.repeat(g.normal(size=(1, dim)), n, axis=0)
            q = g.normal(size=(4, dim))
            res = L.multi_table_knn(
                *_all_candidates(4, n), n, rerank=rerank, queries=q, database=db
            )  # fmt: skip
            assert res.indices.tolist() == [list(range(n))] * 4, (dim, n)
            assert (res.distances == res.distances[:, :1]).all(), (dim, n)
            want = (
                1.0 - (db[0] @ q.T) / np.linalg.norm(db[0]) / np.linalg.norm(q, axis=1)
                if rerank == "cosine"
                else np.linalg.norm(q - db[0], axis=1)
            )
            np.testing.assert_allclose(res.distances[:, 0], want, rtol=0, atol=1e-12)


def test_copies_among_other_rows_are_tied_and_negative_zero_equals_zero() -> None:
    """Copies spread through a database of other rows: the lower index wins among the copies; a
    copy written with -0.0 where the other has 0.0 is the same vector."""
    g = np.random.default_rng(1)
    base = g.normal(size=(3, 8))
    base[:, 0] = 0.0
    pick = g.integers(0, 3, 60)
    db = base[pick]
    db[pick == 1, 0] = -0.0  # every copy of row 1 with a negative zero
    db[np.flatnonzero(pick == 1)[::2], 0] = 0.0  # half of them back to +0.0
    q = g.normal(size=(6, 8))
    res = L.multi_table_knn(*_all_candidates(6, 60), 60, rerank="cosine", queries=q, database=db)
    for i in range(6):
        for b in range(3):
            mine = pick[res.indices[i]] == b
            assert (np.diff(res.indices[i][mine]) > 0).all()
            assert len(np.unique(res.distances[i][mine])) == 1


@pytest.mark.parametrize("rerank", ["cosine", "euclidean"])
def test_nan_or_infinite_float_vectors_are_refused(rerank: str) -> None:
    """A NaN query got NaN distances to every candidate and its candidates came back in index
    order as its nearest (indices [0, 1], distances nan); an infinite database row was ranked
    too. Every other float search of the library refuses them (search.check_finite)."""
    q = np.array([[np.nan, 1.0], [1.0, 0.0]])
    db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    qc, dc = _all_candidates(2, 3)
    with pytest.raises(
        RetrievalError,
        match=r"^1 float query vector\(s\) hold NaN or infinite values \(first row 0\)",
    ):
        L.multi_table_knn(qc, dc, 2, rerank=rerank, queries=q, database=db)
    db_inf = db.copy()
    db_inf[2, 1] = -np.inf
    with pytest.raises(RetrievalError, match=r"^1 float database vector\(s\) .*\(first row 2\)"):
        L.multi_table_knn(qc, dc, 2, rerank=rerank, queries=q[1:].repeat(2, 0), database=db_inf)
    res = L.multi_table_knn(qc, dc, 3, rerank=rerank, queries=q[1:].repeat(2, 0), database=db)
    assert res.indices.tolist() == [[0, 2, 1]] * 2  # finite input: ranked as before


def test_float_rows_that_do_not_match_the_codes_are_counted_in_the_message() -> None:
    """It said only "queries / database rows must match the query / database codes"."""
    qc, dc = _all_candidates(2, 3)
    g = np.random.default_rng(2)
    with pytest.raises(
        RetrievalError,
        match=r"^2 float queries / 4 float database rows for 2 query codes / 3 database codes; "
        "pass the embeddings the codes were made from",
    ):
        L.multi_table_knn(qc, dc, 1, rerank="cosine", queries=g.normal(size=(2, 5)),
                          database=g.normal(size=(4, 5)))  # fmt: skip
