"""Index back-ends: the registry contract, ANN recall, Milvus vs faiss, unreachable Milvus URI."""

from __future__ import annotations

import time

import numpy as np
import pytest

from retrieval.backends import BACKENDS, build_index, recall_at
from retrieval.codes import pack_bits
from retrieval.errors import RetrievalError
from retrieval.search import HammingIndex


def _codes(n: int, q: int, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    db, qq = g.random((n, bits)) > 0.5, g.random((q, bits)) > 0.5
    brute = (qq[:, None, :] != db[None, :, :]).sum(-1)
    return pack_bits(db), pack_bits(qq), brute


@pytest.mark.parametrize("name", ["exact", "faiss"])
def test_exact_backends_match_brute_force_distances(name: str) -> None:
    db, q, brute = _codes(500, 20, 20)
    dist, ids = build_index(name, db, 20).search(q, 10)
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :10])
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)


@pytest.mark.parametrize("name", ["faiss_ivf", "ivf"])
def test_ivf_recall_is_one_when_every_list_is_probed(name: str) -> None:
    db, q, brute = _codes(2000, 30, 36, seed=1)
    exact, _ = build_index("faiss", db, 36).search(q, 10)
    ivf = build_index(name, db, 36, nlist=16, nprobe=16)
    dist, ids = ivf.search(q, 10)
    assert recall_at(exact, dist) == 1.0
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)
    few, _ = build_index(name, db, 36, nlist=16, nprobe=1).search(q, 10)
    assert recall_at(exact, few) < 1.0  # probing 1 of 16 lists misses neighbours


def test_compiled_ivf_probes_the_same_lists_as_faiss_ivf() -> None:
    # same trained quantiser (same seed and sample), nearest lists by exact Hamming distance to the
    # centroids: the two back-ends see the same candidates, so the same recall
    db, q, _ = _codes(3000, 40, 24, seed=4)
    exact, _ = build_index("exact", db, 24).search(q, 10)
    recalls = {
        name: recall_at(exact, build_index(name, db, 24, nlist=32, nprobe=3).search(q, 10)[0])
        for name in ("faiss_ivf", "ivf")
    }
    assert 0.3 < recalls["ivf"] < 1.0
    assert abs(recalls["ivf"] - recalls["faiss_ivf"]) <= 0.05  # ties among centroids may differ


def test_compiled_ivf_pads_when_the_probed_lists_hold_fewer_than_k_codes() -> None:
    db, q, _ = _codes(64, 3, 16, seed=5)
    dist, ids = build_index("ivf", db, 16, nlist=32, nprobe=1).search(q, 20)
    assert (ids == -1).any()
    assert (dist[ids == -1] == 17).all() and (dist[ids >= 0] <= 16).all()


def test_compiled_ivf_checks_nprobe() -> None:
    db, q, _ = _codes(200, 3, 16)
    index = build_index("ivf", db, 16, nlist=8, nprobe=2)
    index.index.nprobe = 9  # set by hand after the build: refused, not clamped
    with pytest.raises(RetrievalError, match="nprobe=9 must be between 1 and nlist=8"):
        index.search(q, 5)
    for name in ("ivf", "faiss_ivf"):
        with pytest.raises(RetrievalError, match=r"nprobe=0 must be >= 1 \(retrieval.ivf_nprobe\)"):
            build_index(name, db, 16, nlist=8, nprobe=0)


@pytest.mark.parametrize("name", ["faiss_ivf", "ivf"])
@pytest.mark.parametrize("n", [1, 10, 15, 16])
def test_ivf_defaults_serve_databases_smaller_than_their_list_count(name: str, n: int) -> None:
    """4 sqrt(N) lists exceed N below 16 codes, and nprobe 16 exceeds the lists below 64: the
    defaults then give every code a list and probe every list, so search is exact."""
    db, q, brute = _codes(n, 4, 12, seed=6)
    index = build_index(name, db, 12, nprobe=16)
    assert index.index.nlist == min(n, int(4 * np.sqrt(n)))
    assert index.index.nprobe == index.index.nlist
    dist, ids = index.search(q, n)
    assert np.array_equal(dist, np.sort(brute, axis=1))
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)


def test_hnsw_returns_the_exact_neighbours_at_high_ef() -> None:
    db, q, brute = _codes(1500, 30, 36, seed=2)
    exact, _ = build_index("faiss", db, 36).search(q, 10)
    hnsw = build_index("faiss_hnsw", db, 36, m=16, ef_construction=64, ef_search=1500)
    dist, ids = hnsw.search(q, 10)
    assert np.array_equal(dist, exact)  # same distance at every rank (ties may swap ids)
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)
    assert all(len(set(row)) == 10 for row in ids.tolist()) and (ids >= 0).all()


def test_hnsw_settings_are_checked() -> None:
    db, _, _ = _codes(50, 1, 16)
    with pytest.raises(RetrievalError, match="HNSW ef_search=0 must be >= 1"):
        build_index("faiss_hnsw", db, 16, ef_search=0)


def test_unknown_backend_names_the_registered_ones() -> None:
    db, _, _ = _codes(10, 1, 8)
    with pytest.raises(RetrievalError, match="registered: " + ", ".join(BACKENDS)):
        build_index("annoy", db, 8)


def test_unreachable_milvus_uri_is_one_fast_error() -> None:
    db, _, _ = _codes(10, 1, 8)
    start = time.perf_counter()
    with pytest.raises(
        RetrievalError, match=r"cannot reach Milvus at http://127\.0\.0\.1:9.*local file"
    ):
        build_index("milvus", db, 8, uri="http://127.0.0.1:9")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://localhost:abc", r"Milvus URI 'http://localhost:abc': Port could not be cast"),
        ("http://localhost:70000", r"Milvus URI 'http://localhost:70000': Port out of range"),
        ("http://:19530", r"Milvus URI 'http://:19530' names no host"),
        ("grpc://", r"Milvus URI 'grpc://' names no host; write a server URI as grpc://host:19530"),
    ],
)
def test_a_malformed_milvus_server_uri_names_the_uri_and_the_fix(uri: str, message: str) -> None:
    db, _, _ = _codes(10, 1, 8)
    with pytest.raises(RetrievalError, match=message + r".*retrieval\.milvus_uri or index --uri"):
        build_index("milvus", db, 8, uri=uri)


def _milvus_lite_or_skip(tmp_path):
    from retrieval.backends import _import_milvus

    try:
        _import_milvus()
        import milvus_lite  # noqa: F401
    except (RetrievalError, ImportError) as err:
        pytest.skip(f"Milvus Lite is not installed: {err}")
    return str(tmp_path / "codes.db")


@pytest.mark.parametrize("bits", [12, 48])
def test_milvus_lite_returns_the_faiss_neighbours(tmp_path, bits: int) -> None:
    uri = _milvus_lite_or_skip(tmp_path)
    db, q, brute = _codes(3000, 25, bits, seed=bits)
    exact, _ = build_index("faiss", db, bits).search(q, 10)
    index = build_index("milvus", db, bits, uri=uri)
    try:
        dist, ids = index.search(q, 10)
    finally:
        index.close()
    assert np.array_equal(dist, exact)  # same distance at every rank (ties may swap ids)
    assert np.array_equal(np.take_along_axis(brute, ids, axis=1), dist)


def test_a_result_hnsw_cannot_fill_is_a_miss_not_a_hit() -> None:
    """A collapsed head (3 distinct 12-bit codes) and a starved graph: IndexBinaryHNSW leaves
    results unfilled (id -1) with distance INT32_MIN, which recall@k counted as hits (reported
    1.0). They now carry the padding distance K + 1 and recall counts only real results."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, (3, 12)).astype(bool)
    db = pack_bits(base[rng.integers(0, 3, 3000)])
    q = pack_bits(rng.integers(0, 2, (20, 12)).astype(bool))
    index = build_index("faiss_hnsw", db, 12, m=2, ef_construction=4, ef_search=1)
    exact, _ = HammingIndex(db, 12).search(q, 3000)
    dist, ids = index.search(q, 3000)
    missing = ids < 0
    assert missing.any() and (dist[missing] == 13).all()
    true = float(((dist <= exact[:, -1:]) & ~missing).mean())
    assert recall_at(exact, dist, ids) == true < 1.0
    assert recall_at(exact, dist) == true  # the padding distance is past any real one too


@pytest.mark.parametrize("name", ["ivf", "faiss_ivf", "faiss_hnsw", "faiss"])
def test_bad_queries_are_named_as_queries(name: str) -> None:
    """The approximate back-ends checked the queries against themselves: an empty query set
    read "the database is empty", 36-bit queries "database codes have 5 bytes"."""
    rng = np.random.default_rng(0)
    index = build_index(name, pack_bits(rng.integers(0, 2, (300, 48)).astype(bool)), 48)
    with pytest.raises(RetrievalError, match="the query set is empty"):
        index.search(np.zeros((0, 6), dtype=np.uint8), 5)
    narrow = pack_bits(rng.integers(0, 2, (4, 36)).astype(bool))
    with pytest.raises(RetrievalError, match="query codes have 5 bytes and database codes 6 bytes"):
        index.search(narrow, 5)


def test_milvus_lite_with_an_ivf_index_is_one_clear_error(tmp_path) -> None:
    """Milvus Lite builds BIN_FLAT only: BIN_IVF_FLAT on a local file was a raw MilvusException
    traceback ("local mode only support BIN_FLAT")."""
    db, _, _ = _codes(10, 1, 8)
    with pytest.raises(RetrievalError, match=r"BIN_IVF_FLAT' needs a Milvus server: Milvus Lite"):
        build_index("milvus", db, 8, uri=str(tmp_path / "codes.db"), index_type="BIN_IVF_FLAT")


def test_milvus_results_it_does_not_fill_are_misses(tmp_path) -> None:
    """A Milvus search that returns fewer than k hits (an IVF index on a server probing too few
    lists) crashed on a shape mismatch; the missing results are id -1 at distance K + 1."""
    uri = _milvus_lite_or_skip(tmp_path)
    db, q, _ = _codes(200, 3, 12, seed=1)
    index = build_index("milvus", db, 12, uri=uri)
    try:
        full = index.client.search

        def fewer(*args, **kwargs):
            return [hits[:3] for hits in full(*args, **kwargs)]

        index.client.search = fewer
        dist, ids = index.search(q, 10)
    finally:
        index.close()
    assert (ids[:, 3:] == -1).all() and (dist[:, 3:] == 13).all() and (ids[:, :3] >= 0).all()


@pytest.mark.parametrize("name", ["ivf", "faiss_ivf"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        # nlist=0 became the default (4 sqrt(N) = 56 lists), -3 a SWIG TypeError
        ({"nlist": 0}, r"^nlist=0 must be >= 1 \(retrieval.ivf_nlist"),
        ({"nlist": -3}, r"^nlist=-3 must be >= 1"),
        # train_size=-1 trained on N - 1 codes; 5 codes for 10 lists was a raw faiss RuntimeError
        ({"nlist": 10, "train_size": -1}, r"^train_size=-1 must be positive"),
        ({"nlist": 10, "train_size": 5}, r"^train_size=5 is smaller than nlist=10"),
        ({"train_size": 0}, r"^train_size=0 must be positive"),
    ],
)
def test_ivf_list_and_training_sizes_are_checked(name: str, options: dict, message: str) -> None:
    db, q, brute = _codes(200, 3, 16)
    with pytest.raises(RetrievalError, match=message):
        build_index(name, db, 16, **options)
    index = build_index(name, db, 16, nlist=10, train_size=10, nprobe=10)  # one code per list
    dist, _ = index.search(q, 5)
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :5])  # every list probed: exact


def test_milvus_k_beyond_its_limit_is_refused_before_milvus_is_called() -> None:
    """Milvus returns at most 16384 results per query: k = 16385 was a MilvusException from the
    server. The check runs before any call (a stand-in client records the calls)."""
    from retrieval.backends import MilvusIndex

    calls: list[int] = []

    class Client:
        def search(self, collection, *, data, limit, **kwargs):
            calls.append(limit)
            return [[] for _ in data]

    index = MilvusIndex.__new__(MilvusIndex)  # no server: only the search-side checks run
    index.n_bits, index._n, index.client = 12, 20_000, Client()
    index.collection, index.index_type, index.nprobe = "codes", "BIN_FLAT", 16
    q = pack_bits(np.zeros((2, 12), dtype=bool))
    with pytest.raises(
        RetrievalError, match=r"^k=16385 exceeds Milvus' limit of 16384.*exact or faiss"
    ):
        index.search(q, 16385)
    assert calls == []
    dist, ids = index.search(q, 16384)  # the limit itself reaches Milvus (here: no hits = misses)
    assert calls == [16384] and (ids == -1).all() and (dist == 13).all()
