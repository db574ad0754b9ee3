"""The compiled Hamming top-k (retrieval/scan.py) equals a brute-force (distance, id) sort on
every route: short and long codes (uint8 / uint16 work buffers, one and several 64-bit words), small
and large k, heavy ties, a database order that forces buffer compaction, any thread count."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import scan
from retrieval.codes import pack_bits, pad_to_words
from retrieval.search import HammingIndex


def _words(bits: np.ndarray) -> np.ndarray:
    return pad_to_words(pack_bits(bits), bits.shape[1]).view(np.uint64)


def _brute(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First k items of every query in (distance, id) order, by a full lexsort."""
    d = (q[:, None, :] != db[None, :, :]).sum(-1)
    ids = np.broadcast_to(np.arange(len(db)), d.shape)
    order = np.lexsort((ids, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.mark.parametrize("n_bits", [1, 5, 12, 48, 64, 65, 130, 300])
@pytest.mark.parametrize("k", [1, 7, 40, scan.SMALL_K + 1])
def test_topk_equals_brute_force_in_distance_then_id_order(n_bits: int, k: int) -> None:
    g = np.random.default_rng(n_bits * 1000 + k)
    db, q = g.random((600, n_bits)) > 0.5, g.random((45, n_bits)) > 0.5
    dist, ids = scan.hamming_topk(_words(db), _words(q), k, n_bits=n_bits)
    want_d, want_i = _brute(q, db, k)
    assert dist.dtype == np.int32 and ids.dtype == np.int64
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(ids, want_i)


def test_k_equal_to_the_database_returns_a_full_stable_sort() -> None:
    g = np.random.default_rng(0)
    db, q = g.random((300, 9)) > 0.5, g.random((4, 9)) > 0.5
    dist, ids = scan.hamming_topk(_words(db), _words(q), 300, n_bits=9)
    want_d, want_i = _brute(q, db, 300)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(dist, want_d)
    assert all(sorted(row) == list(range(300)) for row in ids.tolist())


def test_every_item_closer_than_the_last_forces_compaction_and_stays_exact() -> None:
    # the database runs from far to near the query: every item is accepted, the candidate buffer
    # (2k + 64) overflows and is compacted many times
    n_bits, k = 64, 3
    q = np.zeros((1, n_bits), dtype=bool)
    dist_of_item = np.repeat(np.arange(n_bits, -1, -1), 40)  # 64 .. 0, 40 items each
    db = np.arange(n_bits)[None, :] < dist_of_item[:, None]
    dist, ids = scan.hamming_topk(_words(db), _words(q), k, n_bits=n_bits)
    first_zero = int(np.flatnonzero(dist_of_item == 0)[0])
    np.testing.assert_array_equal(dist, [[0, 0, 0]])
    np.testing.assert_array_equal(ids, [[first_zero, first_zero + 1, first_zero + 2]])


def test_result_does_not_depend_on_threads_or_block_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(1)
    db, q = g.random((5000, 6)) > 0.5, g.random((200, 6)) > 0.5  # 6 bits: ties everywhere
    one = scan.hamming_topk(_words(db), _words(q), 10, n_bits=6, n_threads=1)
    monkeypatch.setattr(scan, "QUERY_BLOCK", 7)
    monkeypatch.setattr(scan, "CHUNK_WORDS", 300)
    three = scan.hamming_topk(_words(db), _words(q), 10, n_bits=6, n_threads=3)
    np.testing.assert_array_equal(one[0], three[0])
    np.testing.assert_array_equal(one[1], three[1])
    np.testing.assert_array_equal(one[1], _brute(q, db, 10)[1])


def test_threads_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHAUDIT_THREADS", "3")
    assert scan.threads() == 3
    monkeypatch.delenv("HASHAUDIT_THREADS")
    assert scan.threads() >= 1


def test_no_queries_gives_empty_results() -> None:
    db = np.random.default_rng(2).random((10, 12)) > 0.5
    dist, ids = scan.hamming_topk(_words(db), _words(db[:0]), 3, n_bits=12)
    assert dist.shape == (0, 3) and ids.shape == (0, 3)


@pytest.mark.parametrize("n_bits", [12, 48, 100])
def test_scan_and_faiss_engines_return_the_same_distances(n_bits: int) -> None:
    g = np.random.default_rng(n_bits)
    db, q = pack_bits(g.random((2000, n_bits)) > 0.5), pack_bits(g.random((30, n_bits)) > 0.5)
    d_scan, i_scan = HammingIndex(db, n_bits).search(q, 25)
    d_faiss, i_faiss = HammingIndex(db, n_bits, engine="faiss").search(q, 25)
    np.testing.assert_array_equal(d_scan, d_faiss)
    # faiss orders ties its own way: same items wherever the tie group ends inside the list
    inside = d_scan < d_scan[:, -1:]
    for row in range(len(q)):
        assert set(i_scan[row][inside[row]]) == set(i_faiss[row][inside[row]])


def test_unknown_engine_is_named() -> None:
    from retrieval.errors import RetrievalError

    with pytest.raises(RetrievalError, match=r"engine='gpu'.*scan, faiss"):
        HammingIndex(pack_bits(np.zeros((3, 8), dtype=bool)), 8, engine="gpu")  # type: ignore[arg-type]


def test_ivf_topk_is_the_exact_top_k_of_the_probed_lists() -> None:
    g = np.random.default_rng(7)
    n_bits, n, n_lists = 20, 900, 6
    db, q = g.random((n, n_bits)) > 0.5, g.random((25, n_bits)) > 0.5
    assign = g.integers(0, n_lists, n)
    ids = np.argsort(assign, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=n_lists))])
    probes = np.stack([g.permutation(n_lists)[:2] for _ in range(len(q))])
    probes[0, 1] = -1  # an unused probe slot
    dist, got = scan.ivf_topk(
        _words(db)[ids], ids, offsets, probes, _words(q), 8, n_bits=n_bits, n_threads=2
    )
    full = (q[:, None, :] != db[None, :, :]).sum(-1)
    for row in range(len(q)):
        allowed = np.isin(assign, probes[row][probes[row] >= 0])
        want = np.sort(full[row][allowed])[:8]
        np.testing.assert_array_equal(dist[row], want)
        assert allowed[got[row]].all() and len(set(got[row])) == 8
        np.testing.assert_array_equal(full[row][got[row]], dist[row])


def _grouped(g, n: int, n_lists: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random list assignment (one list left empty), ids grouped by list, and list offsets."""
    assign = g.integers(1, n_lists, n)
    ids = np.argsort(assign, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=n_lists))])
    return assign, ids, offsets


@pytest.mark.parametrize("n_bits", [4, 48, 64, 70])
@pytest.mark.parametrize("k", [1, 9, 500])
def test_ivf_topk_keeps_the_first_k_in_distance_then_scan_order(n_bits: int, k: int) -> None:
    """The documented ties rule on both list kernels (one-word mask scan, several words): the
    first k codes of the probed lists in (distance, row of the grouped database) order, i.e. lists
    in increasing list number and ids ascending within a list, whatever the probes' order; ids -1
    at distance n_bits + 1 pad. Few bits = heavy ties and buffer compactions; lists longer than
    and not multiples of MASK_BITS."""
    g = np.random.default_rng(n_bits * 10 + k)
    n, n_lists = 1500, 7
    db, q = g.random((n, n_bits)) > 0.5, g.random((40, n_bits)) > 0.5
    assign, ids, offsets = _grouped(g, n, n_lists)
    probes = np.stack([g.permutation(n_lists)[:3] for _ in range(len(q))])
    probes[0, 1] = -1  # an unused probe slot
    probes[1] = [0, -1, -1]  # only the empty list: all padding
    dist, got = scan.ivf_topk(
        _words(db)[ids], ids, offsets, probes, _words(q), k, n_bits=n_bits, n_threads=2
    )
    full = (q[:, None, :] != db[ids][None, :, :]).sum(-1)  # rows of the grouped database
    for row in range(len(q)):
        rows = np.flatnonzero(np.isin(assign[ids], probes[row]))
        order = rows[np.lexsort((rows, full[row, rows]))][:k]
        want_d = np.full(k, n_bits + 1)
        want_i = np.full(k, -1)
        want_d[: len(order)], want_i[: len(order)] = full[row, order], ids[order]
        np.testing.assert_array_equal(dist[row], want_d)
        np.testing.assert_array_equal(got[row], want_i)


@pytest.mark.parametrize("n_bits", [3, 48, 70])
@pytest.mark.parametrize("nprobe", [1, 5, 17, 64])
def test_nearest_lists_equal_brute_force_distance_then_row(n_bits: int, nprobe: int) -> None:
    g = np.random.default_rng(n_bits + nprobe)
    cents, q = g.random((64, n_bits)) > 0.5, g.random((50, n_bits)) > 0.5
    cents[10:20] = cents[3]  # duplicated centroids: ties at every distance
    got = scan.nearest_lists(_words(cents), _words(q), nprobe, n_bits=n_bits, n_threads=2)
    np.testing.assert_array_equal(got, _brute(q, cents, nprobe)[1])


def test_ivf_topk_from_centroids_equals_ivf_topk_of_their_nearest_lists() -> None:
    g = np.random.default_rng(11)
    n_bits, n, n_lists = 9, 2000, 12
    db, q = g.random((n, n_bits)) > 0.5, g.random((60, n_bits)) > 0.5
    cents = g.random((n_lists, n_bits)) > 0.5
    cents[5] = cents[2]
    _, ids, offsets = _grouped(g, n, n_lists)
    words = _words(db)[ids]
    for nprobe in (1, 4, n_lists):
        probes = _brute(q, cents, nprobe)[1]
        want = scan.ivf_topk(words, ids, offsets, probes, _words(q), 6, n_bits=n_bits)
        got = scan.ivf_topk(
            words, ids, offsets, None, _words(q), 6, n_bits=n_bits, n_threads=3,
            centroids=_words(cents), nprobe=nprobe, centroid_bits=n_bits,
        )  # fmt: skip
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_class_counts_equal_brute_force_and_the_faiss_engine() -> None:
    g = np.random.default_rng(8)
    n_bits = 10
    db, q = g.random((700, n_bits)) > 0.5, g.random((70, n_bits)) > 0.5
    y_db = g.integers(0, 4, 700)
    counts = scan.hamming_class_counts(
        _words(db), _words(q), y_db, n_classes=4, n_bits=n_bits, n_threads=2
    )
    full = (q[:, None, :] != db[None, :, :]).sum(-1)
    for row in range(len(q)):
        want = np.zeros((n_bits + 1, 4), dtype=np.int64)
        np.add.at(want, (full[row], y_db), 1)
        np.testing.assert_array_equal(counts[row], want)
    # through HammingIndex.counts, in query blocks, with relevant counts: both engines agree, and
    # a query class the database lacks (4) has no relevant items
    y_q = g.integers(0, 5, 70)
    got = {
        engine: list(
            HammingIndex(pack_bits(db), n_bits, engine=engine).counts(
                pack_bits(q), y_db, y_q, block=16
            )
        )
        for engine in ("scan", "faiss")
    }
    absent = y_q == 4
    for a, b in zip(got["scan"], got["faiss"], strict=True):
        assert a.sl == b.sl
        np.testing.assert_array_equal(a.by_label, b.by_label)
        np.testing.assert_array_equal(a.tot, b.tot)
        rel_a, rel_b = a.rel, b.rel
        assert rel_a is not None and rel_b is not None
        np.testing.assert_array_equal(rel_a, rel_b)
        assert (rel_a[absent[a.sl]] == 0).all() and rel_a[~absent[a.sl]].sum() > 0
