"""faiss-backed exact search: padding, distances, per-distance counts and KNN votes equal the
dense reference path (ties included), and bad input is one RetrievalError."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import iter_hamming_chunks, pack_bits, pad_to_words, to_signs, unpack_bits
from retrieval.errors import RetrievalError
from retrieval.knn import (
    float_distance_chunks,
    knn_float,
    knn_hamming,
    knn_predict,
    tie_aware_votes,
    votes_from_counts,
)
from retrieval.search import HammingIndex


def _brute(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    return (q[:, None, :] != db[None, :, :]).sum(-1)


@pytest.mark.parametrize("n_bits", [1, 7, 12, 13, 36, 48, 65, 100])
def test_padding_keeps_distances_for_odd_lengths(n_bits: int) -> None:
    g = np.random.default_rng(n_bits)
    q, db = g.random((5, n_bits)) > 0.5, g.random((40, n_bits)) > 0.5
    padded = pad_to_words(pack_bits(db), n_bits)
    assert padded.shape[1] % 8 == 0
    assert np.array_equal(unpack_bits(padded[:, : -(-n_bits // 8)], n_bits), db)
    index = HammingIndex(pack_bits(db), n_bits)
    blocks = np.concatenate([d for _, d in index.distance_blocks(pack_bits(q), block=2)])
    assert np.array_equal(blocks, _brute(q, db))
    dist, ids = index.search(pack_bits(q), 6)
    assert np.array_equal(dist, np.sort(_brute(q, db), axis=1)[:, :6])
    assert np.array_equal(np.take_along_axis(_brute(q, db), ids, axis=1), dist)


@pytest.mark.parametrize("multilabel", [False, True])
def test_counts_match_brute_force_histograms(multilabel: bool) -> None:
    g = np.random.default_rng(3)
    q, db = g.random((9, 5)) > 0.5, g.random((70, 5)) > 0.5  # 5 bits: heavy ties
    if multilabel:
        y_db, y_q = g.random((70, 3)) > 0.6, g.random((9, 3)) > 0.5
    else:
        y_db, y_q = g.integers(0, 4, 70), g.integers(0, 4, 9)
    d = _brute(q, db)
    [c] = list(HammingIndex(pack_bits(db), 5).counts(pack_bits(q), y_db, y_q))
    onehot = y_db.astype(int) if multilabel else np.eye(4, dtype=int)[y_db]
    if multilabel:  # a shared label, or neither holds any
        none = ~y_q.any(1)[:, None] & ~y_db.any(1)[None, :]
        rel = (y_q.astype(int) @ y_db.T.astype(int) > 0) | none
        assert none.any()  # the case is exercised
    else:
        rel = y_q[:, None] == y_db
    for i in range(9):
        for dist in range(6):
            at = d[i] == dist
            assert c.tot[i, dist] == at.sum()
            assert c.rel[i, dist] == (at & rel[i]).sum()
            assert np.array_equal(c.by_label[i, dist], onehot[at].sum(0))


@pytest.mark.parametrize("n_bits", [4, 6, 12])
def test_faiss_votes_equal_the_dense_path_bit_for_bit(n_bits: int) -> None:
    g = np.random.default_rng(n_bits)
    q, db = g.random((30, n_bits)) > 0.5, g.random((300, n_bits)) > 0.5
    labels = g.integers(0, 5, 300)
    onehot = np.eye(5, dtype=np.float32)[labels]
    [c] = list(HammingIndex(pack_bits(db), n_bits).counts(pack_bits(q), labels))
    [(_, dense)] = list(iter_hamming_chunks(pack_bits(q), pack_bits(db), n_bits, chunk=30))
    for k in (1, 3, 7, 50, 300):
        assert np.array_equal(
            votes_from_counts(c.by_label, c.tot, k), tie_aware_votes(dense, onehot, k)
        )


@pytest.mark.parametrize("multilabel", [False, True])
def test_knn_hamming_equals_old_path(multilabel: bool) -> None:
    g = np.random.default_rng(7)
    q, db = g.random((40, 6)) > 0.5, g.random((500, 6)) > 0.5
    labels = (g.random((500, 3)) > 0.5).astype(np.uint8) if multilabel else g.integers(0, 4, 500)
    ks = [1, 5, 7, 64]
    new = knn_hamming(pack_bits(q), pack_bits(db), 6, labels, ks)
    old = knn_predict(
        iter_hamming_chunks(pack_bits(q), pack_bits(db), 6, chunk=16), labels, ks, n_queries=40
    )
    for k in ks:
        assert np.array_equal(new[k], old[k])


def test_hamming_knn_equals_euclidean_knn_on_signs() -> None:
    # ||x - y||^2 = 4 * hamming(x, y) for ±1 vectors: same neighbours, same ties, same votes
    g = np.random.default_rng(11)
    q, db = g.random((25, 8)) > 0.5, g.random((400, 8)) > 0.5
    labels = g.integers(0, 3, 400)
    ks = [1, 3, 10, 33]
    ham = knn_hamming(pack_bits(q), pack_bits(db), 8, labels, ks)
    flt = knn_float(to_signs(q).numpy(), to_signs(db).numpy(), labels, ks)
    for k in ks:
        assert np.array_equal(ham[k], flt[k])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_float_equals_old_path(metric: str) -> None:
    g = np.random.default_rng(5)
    db, q = g.normal(size=(300, 16)), g.normal(size=(50, 16))
    db[100:110] = db[5]  # exact duplicates: a tie group straddling k
    labels = g.integers(0, 4, 300)
    ks = [1, 5, 15]
    new = knn_float(q, db, labels, ks, metric=metric)
    old = knn_predict(float_distance_chunks(q, db, metric=metric), labels, ks, n_queries=50)
    for k in ks:
        assert np.array_equal(new[k], old[k])


def test_bad_input_is_one_retrieval_error() -> None:
    g = np.random.default_rng(0)
    db12, q16 = pack_bits(g.random((20, 12)) > 0.5), pack_bits(g.random((3, 16)) > 0.5)
    labels = g.integers(0, 2, 20)
    with pytest.raises(RetrievalError, match="beyond bit 12"):
        knn_hamming(q16, db12, 12, labels, [3])
    with pytest.raises(RetrievalError, match="bytes"):
        knn_hamming(pack_bits(g.random((3, 24)) > 0.5), db12, 12, labels, [3])
    with pytest.raises(RetrievalError, match="query set is empty"):
        knn_hamming(db12[:0], db12, 12, labels, [3])
    with pytest.raises(RetrievalError, match="k=21"):
        knn_hamming(db12[:2], db12, 12, labels, [21])
    with pytest.raises(RetrievalError, match="labels are missing"):
        knn_hamming(db12[:2], db12, 12, None, [3])
    with pytest.raises(RetrievalError, match="k=21"):
        knn_float(g.normal(size=(2, 4)), g.normal(size=(20, 4)), labels, [21])


def test_cosine_of_tiny_nonzero_vectors_equals_cosine_of_their_rescaled_copies() -> None:
    """Every cosine path divided by max(norm, 1e-12): a vector of norm ~1e-20 kept a length of
    ~1e-8 and every cosine distance became 1. Cosine does not depend on scale; an all-zero vector
    still stays zero (distance 1 to everything)."""
    from retrieval import lsh
    from retrieval.rerank import rerank
    from retrieval.search import FloatIndex

    g = np.random.default_rng(0)
    db, q = g.normal(size=(40, 8)).astype(np.float32), g.normal(size=(5, 8)).astype(np.float32)
    tiny = np.float32(1e-20)
    ref_d, _ = FloatIndex(db, metric="cosine").search(q, 5)
    assert ref_d.max() < 0.9  # the nearest 5 of 40 are not orthogonal: the check is sharp
    d, _ = FloatIndex(db * tiny, metric="cosine").search(q * tiny, 5)
    np.testing.assert_allclose(d, ref_d, atol=1e-6)
    [(_, ref)] = list(float_distance_chunks(q, db, metric="cosine"))
    [(_, got)] = list(float_distance_chunks(q * tiny, db * tiny, metric="cosine"))
    np.testing.assert_allclose(got, ref, atol=1e-6)
    codes_db, codes_q = pack_bits(db > 0), pack_bits(q > 0)
    ref_r = rerank(codes_q, codes_db, 8, q, db, shortlist=40)
    got_r = rerank(codes_q, codes_db, 8, q * tiny, db * tiny, shortlist=40)
    np.testing.assert_allclose(got_r.dist, ref_r.dist, atol=1e-6)
    one_table = np.zeros((1, 40, 2), dtype=bool), np.zeros((1, 5, 2), dtype=bool)  # all candidates
    ref_l = lsh.multi_table_knn(
        one_table[1], one_table[0], 5, rerank="cosine", queries=q, database=db
    )
    got_l = lsh.multi_table_knn(
        one_table[1], one_table[0], 5, rerank="cosine", queries=q * tiny, database=db * tiny
    )
    np.testing.assert_allclose(got_l.distances, ref_l.distances, atol=1e-6)
    # a zero vector: inner product 0 with every unit query, cosine distance exactly 1
    zero = np.zeros((1, 8), dtype=np.float32)
    assert FloatIndex(zero, metric="cosine").search(q, 1)[0].tolist() == [[1.0]] * 5
    [(_, dz)] = list(float_distance_chunks(q, zero, metric="cosine"))
    assert dz.tolist() == [[1.0]] * 5
