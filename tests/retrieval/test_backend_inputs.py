"""Index back-ends and KNN on inputs they misread: numpy and non-integral k, recall of mismatched
searches, block sizes below one, and Milvus collections shared between indexes or read stale."""

from __future__ import annotations

import types

import numpy as np
import pytest

from retrieval.backends import build_index, recall_at
from retrieval.codes import pack_bits, to_signs
from retrieval.errors import RetrievalError
from retrieval.knn import knn_float, knn_hamming
from retrieval.search import FloatIndex, HammingIndex

# every back-end searching exhaustively (every list probed, a wide HNSW beam): exact distances
EXHAUSTIVE = {
    "exact": {},
    "faiss": {},
    "ivf": {"nlist": 4, "nprobe": 4},
    "faiss_ivf": {"nlist": 4, "nprobe": 4},
    "faiss_hnsw": {"ef_search": 500},
}


def _codes(n: int, q: int, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    db, qq = g.random((n, bits)) > 0.5, g.random((q, bits)) > 0.5
    return db, qq, (qq[:, None, :] != db[None, :, :]).sum(-1)


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
def test_a_numpy_int_k_is_served_by_every_backend(name: str) -> None:
    """``k = np.int64(5)`` (e.g. read from an array of k's): the faiss back-ends raised SWIG's
    "Wrong number or type of arguments for overloaded function" TypeError."""
    db, q, brute = _codes(300, 6, 20, seed=1)
    index = build_index(name, pack_bits(db), 20, **EXHAUSTIVE[name])
    dist, ids = index.search(pack_bits(q), np.int64(5))
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :5])
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)


def test_knn_float_takes_numpy_ks_like_knn_hamming() -> None:
    """``knn_float(..., ks=np.array([1, 3]))`` was the same SWIG TypeError (``FloatIndex.search``
    with a numpy k); ``knn_hamming`` took it. On ±1 codes both equal the brute-force vote."""
    db, q, brute = _codes(80, 9, 16, seed=2)
    labels = np.random.default_rng(2).integers(0, 3, 80)
    ks = np.array([1, 3])
    flt = knn_float(to_signs(q).numpy(), to_signs(db).numpy(), labels, ks)
    ham = knn_hamming(pack_bits(q), pack_bits(db), 16, labels, ks)
    for k in (1, 3):
        # brute force, with the tie rule: closer items vote 1, the k-th distance's share the rest
        expected = []
        for row in brute:
            kth = np.sort(row)[k - 1]
            closer, tied = row < kth, row == kth
            n_tied, rest = tied.sum(), k - closer.sum()
            num = [
                closer[labels == c].sum() * n_tied + rest * tied[labels == c].sum()
                for c in (0, 1, 2)
            ]
            expected.append(int(np.argmax(num)))
        assert flt[k].tolist() == expected == ham[k].tolist()


@pytest.mark.parametrize("k", [2.5, 3.0, True, "3"])
def test_a_k_that_is_not_a_whole_number_is_refused(k: object) -> None:
    """2.5 was a TypeError from numpy ("'float' object cannot be interpreted as an integer"),
    and knn_hamming answered ``ks=[2.5]`` with predictions of a "2.5-NN"."""
    db, q, _ = _codes(40, 3, 12)
    labels = np.arange(40) % 3
    message = rf"^k={k!r} must be a whole number \(an int\) between 1 and the database size 40"
    for name in ("exact", "faiss", "faiss_hnsw"):
        with pytest.raises(RetrievalError, match=message):
            build_index(name, pack_bits(db), 12).search(pack_bits(q), k)
    with pytest.raises(RetrievalError, match=message):
        knn_hamming(pack_bits(q), pack_bits(db), 12, labels, [k])
    with pytest.raises(RetrievalError, match=message):
        knn_float(to_signs(q).numpy(), to_signs(db).numpy(), labels, [k])


def test_recall_refuses_searches_of_another_k_or_another_query_set() -> None:
    """Shapes broadcast: 100 approximate results against the 10th exact distance, or one exact row
    against three queries, read as recall 1.0."""
    exact = np.array([[0, 1, 1], [2, 2, 3]])
    approx = np.array([[0, 1, 2], [2, 4, 13]])
    ids = np.array([[5, 6, 7], [1, 2, -1]])
    assert recall_at(exact, approx, ids) == pytest.approx(3 / 6)  # 0, 1 | 2 within; 2 > 1, 4 > 3
    with pytest.raises(
        RetrievalError, match=r"exact distances \(2, 3\) and approximate .*\(2, 9\)"
    ):
        recall_at(exact, np.zeros((2, 9), dtype=int))
    with pytest.raises(
        RetrievalError, match=r"exact distances \(1, 3\) and approximate .*\(2, 3\)"
    ):
        recall_at(exact[:1], approx)
    with pytest.raises(RetrievalError, match=r"approximate ids \(2, 2\) and distances \(2, 3\)"):
        recall_at(exact, approx, ids[:, :2])


def test_a_block_below_one_is_refused_not_left_uninitialised() -> None:
    """``block=-1`` skipped every block: the faiss engine returned its ``np.empty`` result
    arrays, ``counts`` yielded nothing (so no query got a prediction), ``FloatIndex`` too."""
    db, q, brute = _codes(50, 4, 12, seed=3)
    labels = np.arange(50) % 2
    index = HammingIndex(pack_bits(db), 12, engine="faiss")
    for block in (-1, 0):
        with pytest.raises(RetrievalError, match=rf"^block={block} must be a positive int"):
            index.search(pack_bits(q), 3, block=block)
        with pytest.raises(RetrievalError, match=rf"^block={block} must be a positive int"):
            list(HammingIndex(pack_bits(db), 12).counts(pack_bits(q), labels, block=block))
        with pytest.raises(RetrievalError, match=rf"^block={block} must be a positive int"):
            FloatIndex(to_signs(db).numpy()).search(to_signs(q).numpy(), 3, block=block)
    dist, _ = index.search(pack_bits(q), 3, block=1)  # one query per faiss call: still exact
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :3])
    counts = list(HammingIndex(pack_bits(db), 12).counts(pack_bits(q), labels, block=1))
    assert [c.tot.sum() for c in counts] == [50] * 4


def _milvus_lite_or_skip(tmp_path) -> str:
    from retrieval.backends import _import_milvus

    try:
        _import_milvus()
        import milvus_lite  # noqa: F401
    except (RetrievalError, ImportError) as err:
        pytest.skip(f"Milvus Lite is not installed: {err}")
    return str(tmp_path / "codes.db")


def test_two_milvus_indexes_on_one_uri_keep_their_own_codes(tmp_path) -> None:
    """Both used the collection ``hashaudit_codes``: building the second dropped and refilled the
    first one's, whose searches then returned the second database's ids and distances."""
    uri = _milvus_lite_or_skip(tmp_path)
    db_a, q, brute = _codes(100, 3, 16, seed=4)
    db_b = ~db_a[:50]
    first = build_index("milvus", pack_bits(db_a), 16, uri=uri)
    second = build_index("milvus", pack_bits(db_b), 16, uri=uri)
    try:
        dist, ids = first.search(pack_bits(q), 5)
        assert np.array_equal(dist, np.sort(brute, axis=1)[:, :5])
        assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)
    finally:
        first.close()
        second.close()
    assert first.collection != second.collection


class _BoundedMilvus:
    """A stand-in for a Milvus server's client: under the Bounded consistency level (pymilvus'
    default for a new collection) a search does not see the latest insert (written within the
    staleness bound, a few seconds); under Strong it sees every insert."""

    def __init__(self, **kwargs: object) -> None:
        self.batches: list[list[dict]] = []
        self.level = "Bounded"

    def has_collection(self, name: str) -> bool:
        return False

    def create_schema(self, **kwargs: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(add_field=lambda *a, **k: None)

    def prepare_index_params(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(add_index=lambda **k: None)

    def create_collection(self, name: str, **kwargs: object) -> None:
        self.level = str(kwargs.get("consistency_level", "Bounded"))

    def insert(self, name: str, rows: list[dict]) -> None:
        self.batches.append(rows)

    def load_collection(self, name: str) -> None:
        pass

    def search(self, name: str, *, data: list[bytes], limit: int, **kwargs: object) -> list:
        level = str(kwargs.get("consistency_level", self.level))
        seen = self.batches if level == "Strong" else self.batches[:-1]
        rows = [r for batch in seen for r in batch]
        out = []
        for qb in data:
            qbits = np.unpackbits(np.frombuffer(qb, dtype=np.uint8))
            hits = [
                {
                    "id": r["id"],
                    "distance": float(
                        (np.unpackbits(np.frombuffer(r["code"], np.uint8)) != qbits).sum()
                    ),
                }
                for r in rows
            ]
            out.append(sorted(hits, key=lambda h: (h["distance"], h["id"]))[:limit])
        return out

    def close(self) -> None:
        pass


def test_milvus_searches_see_every_inserted_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collection was created at Milvus' default consistency, Bounded: a search right after
    the inserts may miss the last ones, read as neighbours the index missed (their places taken
    by farther codes). It is created Strong now."""
    from retrieval import backends

    fake = types.SimpleNamespace(
        MilvusClient=_BoundedMilvus,
        DataType=types.SimpleNamespace(INT64="INT64", BINARY_VECTOR="BINARY_VECTOR"),
        exceptions=types.SimpleNamespace(MilvusException=RuntimeError),
    )
    monkeypatch.setattr(backends, "_import_milvus", lambda: fake)
    db, q, brute = _codes(30, 4, 12, seed=5)
    db[25:] = q[0]  # the query's copies arrive in the last insert batch
    brute = (q[:, None, :] != db[None, :, :]).sum(-1)
    index = backends.MilvusIndex(pack_bits(db), 12, uri="codes.db", batch=10)
    dist, ids = index.search(pack_bits(q), 6)
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :6])
    assert dist[0].tolist() == [0, 0, 0, 0, 0, dist[0, 5]] and set(ids[0, :5]) == set(range(25, 30))
