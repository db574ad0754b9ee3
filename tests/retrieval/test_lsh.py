"""Multi-table LSH candidate search (retrieval.lsh) on hand-made buckets and real LSH codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hashers import registry
from hashers.base import HeadSpec
from hashers.baselines import LSHConfig
from retrieval import lsh as L
from retrieval.errors import RetrievalError


def spec(in_dim: int, n_bits: int) -> HeadSpec:
    return HeadSpec(in_dim=in_dim, n_bits=n_bits, n_classes=1)


def test_multi_table_candidates_golden() -> None:
    # 2 tables, 2 bits; db row i's codes per table, query 0 / 1 codes per table
    db = np.array(
        [
            [[0, 0], [0, 1], [0, 0], [1, 1]],  # table 0
            [[1, 0], [1, 1], [0, 1], [1, 0]],  # table 1
        ],
        dtype=bool,
    )
    q = np.array([[[0, 0], [1, 0]], [[1, 0], [0, 0]]], dtype=bool)
    cands = L.multi_table_candidates(q, db)
    # query 0: table 0 bucket 00 -> {0, 2}; table 1 bucket 10 -> {0, 3}
    assert cands[0].tolist() == [0, 2, 3]
    # query 1: table 0 bucket 10 -> {}; table 1 bucket 00 -> {}
    assert cands[1].tolist() == []


def test_multi_table_knn_golden_hamming_and_padding() -> None:
    db = np.array([[[0, 0], [0, 1], [0, 0], [1, 1]], [[1, 0], [1, 1], [0, 1], [1, 0]]], dtype=bool)
    q = np.array([[[0, 0], [1, 0]], [[1, 0], [0, 0]]], dtype=bool)
    res = L.multi_table_knn(q, db, k=2)
    # query 0 vs candidates over 4 bits: row 0 -> 0, row 2 -> 2, row 3 -> 2 (tie: lower index first)
    assert res.indices.tolist() == [[0, 2], [-1, -1]]
    assert res.distances[0].tolist() == [0.0, 2.0]
    assert np.isinf(res.distances[1]).all()
    assert res.n_candidates.tolist() == [3, 0]


def test_multi_table_knn_float_rerank_is_exact_within_candidates() -> None:
    g = np.random.default_rng(0)
    db_x = g.normal(size=(300, 8))
    q_x = db_x[:20] + 0.01 * g.normal(size=(20, 8))
    lsh = registry.build("lsh", spec(8, 10), LSHConfig(tables=4, center=False))
    res = L.multi_table_knn(
        lsh.encode_tables(torch.as_tensor(q_x, dtype=torch.float32)),
        lsh.encode_tables(torch.as_tensor(db_x, dtype=torch.float32)),
        k=1,
        rerank="euclidean",
        queries=q_x,
        database=db_x,
    )
    assert res.indices[:, 0].tolist() == list(range(20))  # each query's own (near-duplicate) row
    assert np.allclose(res.distances[:, 0], np.linalg.norm(q_x - db_x[:20], axis=1))
    with pytest.raises(RetrievalError, match="needs the float"):
        L.multi_table_knn(
            np.zeros((1, 1, 2), bool), np.zeros((1, 3, 2), bool), k=1, rerank="cosine"
        )


def test_multi_table_recall_of_true_nearest_neighbour_rises_with_tables() -> None:
    g = np.random.default_rng(1)
    db_x = g.normal(size=(2000, 16)).astype(np.float32)
    q_x = g.normal(size=(200, 16)).astype(np.float32)
    d2 = ((q_x[:, None, :] - db_x[None, :, :]) ** 2).sum(-1)
    true_nn = d2.argmin(axis=1)
    lsh = registry.build("lsh", spec(16, 10), LSHConfig(tables=16, center=False))
    qt, dt = lsh.encode_tables(torch.from_numpy(q_x)), lsh.encode_tables(torch.from_numpy(db_x))
    recalls, sizes = [], []
    for tables in (1, 4, 16):  # table prefixes of one 16-table LSH: the candidate sets are nested
        res = L.multi_table_knn(
            qt[:tables], dt[:tables], k=1, rerank="euclidean", queries=q_x, database=db_x
        )
        recalls.append(res.recall_at(true_nn))
        sizes.append(res.n_candidates.mean())
    assert recalls[0] < recalls[1] < recalls[2]
    assert sizes[0] < sizes[1] < sizes[2] < 0.1 * 2000  # still a small fraction of a full scan
    assert (
        recalls[0] < 0.2 and recalls[2] > 0.5
    )  # (measured: 0.045, 0.24, 0.655; 5, 19, 76 candidates)


def test_multi_table_shapes_must_match() -> None:
    with pytest.raises(RetrievalError, match="differ"):
        L.multi_table_candidates(np.zeros((2, 1, 8), bool), np.zeros((3, 5, 8), bool))


def test_sign_codes_are_refused_not_read_as_all_ones() -> None:
    """``_as_codes`` cast any array to bool: ±1 signs (``codes.to_signs``) or real projections
    read every -1 as bit 1, so every row had the all-ones code and every database row became
    every query's candidate at Hamming distance 0. 0/1 codes still equal their bool codes."""
    db = np.array([[[0, 0], [0, 1], [1, 1]]], dtype=bool)  # 1 table, 3 rows, 2 bits
    q = np.array([[[0, 1]]], dtype=bool)
    assert [c.tolist() for c in L.multi_table_candidates(q, db)] == [[1]]  # only row 1's bucket
    assert [c.tolist() for c in L.multi_table_candidates(q.astype(np.uint8), db.astype(int))] == [
        [1]
    ]
    signs_db, signs_q = np.where(db, 1, -1), np.where(q, 1, -1)
    with pytest.raises(RetrievalError, match=r"db_codes must be bool codes .* value -1 \(table 0"):
        L.multi_table_candidates(q, signs_db)
    with pytest.raises(RetrievalError, match=r"query_codes must be bool codes .*value > 0"):
        L.multi_table_knn(signs_q, db, k=1)
    with pytest.raises(RetrievalError, match=r"value 0\.3"):
        L.multi_table_candidates(torch.tensor([[[0.3, -1.2]]]), db)


def test_float_rerank_refuses_queries_of_another_dimension() -> None:
    """Queries ``[Q, 1]`` against a ``[N, 5]`` database broadcast in the Euclidean re-rank:
    silently wrong distances (and a raw numpy ValueError for cosine)."""
    g = np.random.default_rng(0)
    db_codes, q_codes = np.zeros((1, 6, 2), bool), np.zeros((1, 2, 2), bool)  # all candidates
    db_x, q_x = g.normal(size=(6, 5)), g.normal(size=(2, 5))
    res = L.multi_table_knn(q_codes, db_codes, 1, rerank="euclidean", queries=q_x, database=db_x)
    brute = np.linalg.norm(q_x[:, None] - db_x[None], axis=2)
    assert res.indices[:, 0].tolist() == brute.argmin(axis=1).tolist()
    for rerank in ("euclidean", "cosine"):
        with pytest.raises(RetrievalError, match=r"float queries \(2, 1\) and float database"):
            L.multi_table_knn(
                q_codes, db_codes, 1, rerank=rerank, queries=q_x[:, :1], database=db_x
            )
