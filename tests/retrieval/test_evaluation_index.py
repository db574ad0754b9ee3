"""hamming_report with a prebuilt index: the index must hold the database codes it is given."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.evaluation import hamming_report
from retrieval.ranking import RankingSpec
from retrieval.search import HammingIndex

SPEC = RankingSpec(map_at=(5,), precision_at=(5,))


def _codes(seed: int, n: int = 20, bits: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.packbits(rng.integers(0, 2, (n, bits)).astype(bool), axis=1, bitorder="little")


def _brute_1nn(q: np.ndarray, db: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1-NN by hand: Hamming distances from the unpacked bits; ties split evenly between the
    tied items, the lowest class among equal votes."""
    qb = np.unpackbits(q, axis=1, bitorder="little").astype(int)
    dbb = np.unpackbits(db, axis=1, bitorder="little").astype(int)
    dist = (qb[:, None, :] != dbb[None, :, :]).sum(axis=2)
    out = []
    for row in dist:
        tied = y[row == row.min()]
        out.append(int(np.argmax(np.bincount(tied, minlength=y.max() + 1))))
    return np.asarray(out)


def test_an_index_of_other_database_codes_is_refused_not_searched() -> None:
    """The index of another database answered silently: predictions [2 0 2 1 1] instead of
    [0 1 0 1 1] and mAP@5 0.553 instead of 0.870, filed under the codes passed as db_packed."""
    a, b = _codes(0), _codes(1)
    y = np.random.default_rng(2).integers(0, 3, 20)
    q, yq = a[:5], y[:5]
    plain = hamming_report(q, a, 16, yq, y, [1], spec=SPEC)
    np.testing.assert_array_equal(plain.predictions[1], _brute_1nn(q, a, y))
    # the index of these codes: the same numbers as without one
    same = hamming_report(q, a, 16, yq, y, [1], spec=SPEC, index=HammingIndex(a, 16))
    np.testing.assert_array_equal(same.predictions[1], plain.predictions[1])
    assert same.ranking.scalars == plain.ranking.scalars
    with pytest.raises(RetrievalError, match="the index was built on other database codes"):
        hamming_report(q, a, 16, yq, y, [1], spec=SPEC, index=HammingIndex(b, 16))
    with pytest.raises(RetrievalError, match=r"other database codes \(20 rows\) than db_packed"):
        hamming_report(q, a[:10], 16, yq, y[:10], [1], spec=SPEC, index=HammingIndex(a, 16))


def test_an_index_of_another_code_length_is_refused() -> None:
    a = _codes(0, bits=16)
    a12 = np.packbits(
        np.unpackbits(a, axis=1, bitorder="little")[:, :12], axis=1, bitorder="little"
    )
    y = np.arange(20) % 3
    with pytest.raises(RetrievalError, match="the index holds 12-bit codes but n_bits=16"):
        hamming_report(a12[:5], a12, 16, y[:5], y, [1], spec=SPEC, index=HammingIndex(a12, 12))


def test_every_search_given_an_index_refuses_one_of_other_codes() -> None:
    # knn_hamming, hamming_ranking and rerank had the same `index or HammingIndex(...)`
    from retrieval.knn import knn_hamming
    from retrieval.ranking import hamming_ranking
    from retrieval.rerank import rerank

    a, b = _codes(0), _codes(1)
    y = np.arange(20) % 3
    other = HammingIndex(b, 16)
    x = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)
    calls = [
        lambda index: knn_hamming(a[:5], a, 16, y, [1], index=index),
        lambda index: hamming_ranking(a[:5], a, 16, y[:5], y, spec=SPEC, index=index),
        lambda index: rerank(a[:5], a, 16, x[:5], x, shortlist=4, index=index),
    ]
    for call in calls:
        with pytest.raises(RetrievalError, match="the index was built on other database codes"):
            call(other)
        call(HammingIndex(a, 16))  # the index of these codes is accepted
    np.testing.assert_array_equal(
        knn_hamming(a[:5], a, 16, y, [1], index=HammingIndex(a, 16))[1], _brute_1nn(a[:5], a, y)
    )
