"""Exact search: Hamming top-k and per-distance counts, float top-k.

:class:`HammingIndex` holds codes of any length zero-padded to whole 8-byte words on both sides,
which leaves every Hamming distance unchanged and lets every kernel work on 64-bit words (a 6-byte
code would make faiss fall back to its generic byte loop, ~10x slower). Its top-k search has two
engines that return the same distances:

* ``"scan"`` (default): :func:`retrieval.scan.hamming_topk`, a compiled SIMD linear scan; ties at
  the k-th distance are broken by the smaller database id, so results do not depend on threads.
* ``"faiss"``: faiss ``IndexBinaryFlat`` (Douze et al., "The Faiss library", 2024); faiss' order
  among equal distances.

Per-distance counts and distance blocks run in query blocks so that memory stays bounded:
``block_elems`` caps the number of query x database distances held at once. Single-label counts
with the ``"scan"`` engine come straight from :func:`retrieval.scan.hamming_class_counts` (no
distance block at all); multi-label counts and the ``"faiss"`` engine use the route below.

Tie-aware voting and tie-aware ranking metrics need, for every query, how many database items of
each class lie at each Hamming distance (``K + 1`` possible values): :meth:`HammingIndex.counts`.
faiss has no histogram call, so a block of distances comes from faiss' ``hammings`` kernel on the
index's own padded codes, is cast to ``uint8``/``uint16`` and sorted per row within each class
segment (numpy's stable sort is a radix sort for these types: linear time), and the counts are read
off with ``searchsorted``. This costs ``O(N)`` per query whatever the ties, whereas a range search at
the k-th distance returns every tied item (with collapsed codes: thousands per query).

:class:`FloatIndex` does the same for float embeddings with ``IndexFlatL2`` (squared Euclidean) or
``IndexFlatIP`` on L2-normalised vectors (cosine distance ``1 - cos``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from retrieval.codes import check_codes, pad_to_words
from retrieval.errors import RetrievalError
from retrieval.metrics import check_multihot_01, multilabel_relevance

Metric = Literal["euclidean", "cosine"]
Engine = Literal["scan", "faiss"]
ENGINES: tuple[str, ...] = ("scan", "faiss")

#: query x database distances held at once by the blocked routines (32 Mi = 128 MiB of int32)
BLOCK_ELEMS = 1 << 25
#: queries per faiss database scan in :meth:`HammingIndex.search` with ``engine="faiss"`` (faiss'
#: default is 32)
QUERY_BATCH = 512


def _faiss() -> Any:
    """faiss, imported on first use: modules that only use the dense paths (the trainer's model
    selection) then import without it."""
    import faiss

    return faiss


def block_rows(n_db: int, block_elems: int = BLOCK_ELEMS) -> int:
    """Queries per block so that a ``[block, n_db]`` distance block holds ``<= block_elems`` values."""
    return max(1, block_elems // max(n_db, 1))


def check_k(k: int, n_db: int) -> int:
    """``k`` as a Python int, after refusing a k that is not a whole number or lies outside
    ``1 .. n_db``. Callers pass the returned int on: faiss' SWIG wrappers take Python ints only (a
    numpy ``int64`` k was a "Wrong number or type of arguments" TypeError), and a float k such as
    2.5 was a TypeError deep in numpy, or a "2.5-NN" vote from the per-distance counts."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise RetrievalError(
            f"k={k!r} must be a whole number (an int) between 1 and the database size {n_db}; "
            "pass an int k (params knn.k / knn.k_sweep)"
        )
    if not 1 <= k <= n_db:
        raise RetrievalError(
            f"k={k} must be between 1 and the database size {n_db}; lower k (params knn.k / "
            "knn.k_sweep) or use a larger database"
        )
    return int(k)


def check_block(block: int | None) -> None:
    """Refuse a query block size below 1 (``None`` = the default): a negative step skipped every
    block, leaving the uninitialised result arrays (``np.empty``) or no counts at all."""
    if block is not None and (
        isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)) or block < 1
    ):
        raise RetrievalError(
            f"block={block!r} must be a positive int (queries per block), or None for the default"
        )


# Largest squared L2 norm a vector may have so that a float32 squared distance between two such
# vectors (at most 2 * (|q|^2 + |d|^2)) and a float32 norm stay finite: FLT_MAX / 4.
MAX_SQ_NORM = float(np.finfo(np.float32).max) / 4.0


def check_finite(x: np.ndarray, what: str, *, row_ids: np.ndarray | None = None) -> None:
    """Refuse NaN or infinite float vectors, and vectors so large that a float32 squared distance
    or norm overflows: faiss answers those with id -1 and a distance of FLT_MAX, a float32 norm
    becomes inf (a cosine vector of zeros), and a vote or ranking over them would be silently
    wrong.

    ``x`` holds vectors along its last axis (any leading shape: a re-ranked block is
    ``[queries, R, D]``); ``row_ids`` names the flattened rows in the message (e.g. the database
    ids of a shortlist) instead of their position in ``x``.
    """
    arr = np.asarray(x)
    if arr.size == 0:
        return
    flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(arr.size, 1)

    ids = None if row_ids is None else np.asarray(row_ids).reshape(-1)

    def name(row: int) -> int:
        return int(row if ids is None else ids[row])

    def count(rows: np.ndarray) -> int:  # distinct vectors: a shortlist repeats database rows
        return len(rows) if ids is None else len(np.unique(ids[rows]))

    bad = ~np.isfinite(flat)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise RetrievalError(
            f"{count(rows)} {what} vector(s) hold NaN or infinite values (first row {name(rows[0])}); "
            "fix or drop them before searching (e.g. re-run the extract stage)"
        )
    if arr.ndim >= 2:
        sq = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
        big = np.flatnonzero(sq > MAX_SQ_NORM)
        if big.size:
            raise RetrievalError(
                f"{count(big)} {what} vector(s) have an L2 norm of {float(np.sqrt(sq[big[0]])):.3g} "
                f"(first row {name(big[0])}), beyond {float(np.sqrt(MAX_SQ_NORM)):.3g}, where float32 "
                "distances overflow; rescale the embeddings (e.g. standardise them) before searching"
            )


class HammingIndex:
    """Exact Hamming search over packed codes (``uint8 [N, ceil(K/8)]``, little bit order).

    ``engine``: ``"scan"`` (compiled linear scan, ties by database id) or ``"faiss"``
    (``IndexBinaryFlat``); see the module docstring.
    """

    def __init__(self, db_packed: np.ndarray, n_bits: int, *, engine: Engine = "scan") -> None:
        check_codes(None, db_packed, n_bits)
        if engine not in ENGINES:
            raise RetrievalError(f"engine={engine!r}: use one of {', '.join(ENGINES)}")
        self.n_bits = n_bits
        self.engine = engine
        self.codes = np.ascontiguousarray(pad_to_words(db_packed, n_bits))
        self.index: Any = None
        if engine == "faiss":
            self.index = _faiss().IndexBinaryFlat(8 * self.codes.shape[1])
            # faiss scans the database once per batch of queries: its default batch of 32 re-reads
            # a 1M-code database 16x more often than QUERY_BATCH = 512 (3-4x slower than a batch
            # of 1024 in bench_retrieval)
            self.index.query_batch_size = QUERY_BATCH
            self.index.add(self.codes)

    @property
    def ntotal(self) -> int:
        return len(self.codes)

    def _queries(self, q_packed: np.ndarray) -> np.ndarray:
        check_codes(q_packed, self.codes[:, : math.ceil(self.n_bits / 8)], self.n_bits)
        return np.ascontiguousarray(pad_to_words(q_packed, self.n_bits))

    def search(
        self, q_packed: np.ndarray, k: int, *, block: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances int32 [Q, k], ids int64 [Q, k])`` of the k nearest codes, ascending.

        Among equal distances: the smaller database id first (``"scan"``) or faiss' order
        (``"faiss"``); use :meth:`counts` where ties matter. ``block`` (queries per faiss call)
        applies to ``"faiss"`` only: the scan's memory is ``O(k)`` per query whatever the count.
        """
        k = check_k(k, self.ntotal)
        check_block(block)
        q = self._queries(q_packed)
        if self.engine == "scan":
            from retrieval.scan import hamming_topk  # numba, imported on first use like faiss

            words = self.codes.view(np.uint64)
            return hamming_topk(words, q.view(np.uint64), k, n_bits=self.n_bits)
        step = block or max(block_rows(k, BLOCK_ELEMS), 1)
        dist = np.empty((len(q), k), dtype=np.int32)
        ids = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), step):
            sl = slice(start, min(start + step, len(q)))
            dist[sl], ids[sl] = self.index.search(q[sl], k)
        return dist, ids

    def distance_blocks(
        self, q_packed: np.ndarray, *, block: int | None = None, order: np.ndarray | None = None
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(query slice, int32 [b, N])`` exact distances, ``b * N <= BLOCK_ELEMS``
        (columns in database order, or in the order of the row permutation ``order``)."""
        check_block(block)
        q = self._queries(q_packed)
        codes = self.codes if order is None else np.ascontiguousarray(self.codes[order])
        n, width = self.ntotal, codes.shape[1]
        step = block or block_rows(n)
        for start in range(0, len(q), step):
            sl = slice(start, min(start + step, len(q)))
            qb = np.ascontiguousarray(q[sl])
            out = np.empty((len(qb), n), dtype=np.int32)
            _faiss().hammings(
                _faiss().swig_ptr(qb),
                _faiss().swig_ptr(codes),
                len(qb),
                n,
                width,
                _faiss().swig_ptr(out),
            )
            yield sl, out

    def counts(
        self,
        q_packed: np.ndarray,
        db_labels: np.ndarray,
        q_labels: np.ndarray | None = None,
        *,
        block: int | None = None,
    ) -> Iterator[BlockCounts]:
        """Per-distance counts for every query block (see :class:`BlockCounts`).

        ``db_labels``: int ``[N]`` class ids or 0/1 ``[N, C]`` multi-hot labels; ``q_labels`` (same
        kind, ``[Q]`` / ``[Q, C]``) adds the relevant counts used by the ranking metrics
        (relevant = same class; multi-label: at least one shared label, or both without any:
        :func:`retrieval.metrics.multilabel_relevance`).
        """
        n_values = self.n_bits + 1
        check_block(block)
        labels = _check_labels(db_labels, self.ntotal, "database")
        if q_labels is not None:
            q_labels = _check_labels(q_labels, len(q_packed), "query")
            _check_label_kinds(q_labels, labels)
        if labels.ndim == 1 and self.engine == "scan":
            yield from self._scan_counts(q_packed, labels, q_labels, block=block)
            return
        dtype = np.uint8 if 2 * n_values + 1 < 256 else np.uint16
        if labels.ndim == 1:
            order = np.argsort(labels, kind="stable")
            n_cls = int(labels.max()) + 1
            bounds = np.searchsorted(labels[order], np.arange(n_cls + 1))
            segments: list[np.ndarray | slice] = [
                slice(int(bounds[c]), int(bounds[c + 1])) for c in range(n_cls)
            ]
        else:
            order = None
            segments = [np.flatnonzero(labels[:, c]) for c in range(labels.shape[1])]
        pool = ThreadPoolExecutor(max_workers=min(len(segments), os.cpu_count() or 1, 8))
        for sl, dist in self.distance_blocks(q_packed, block=block, order=order):
            d = dist.astype(dtype)
            del dist
            parts = pool.map(lambda s, d=d: _row_counts(d[:, s], n_values), segments)
            by_label = np.stack(list(parts), axis=2)
            if labels.ndim == 1:
                tot = by_label.sum(axis=2)
                rel = None if q_labels is None else _same_class(by_label, q_labels[sl])
            elif q_labels is None:
                tot, rel = _row_counts(d, n_values), None
            else:
                shares = multilabel_relevance(q_labels[sl], labels)
                both = _row_counts(d * 2 + shares.astype(dtype), 2 * n_values)
                tot = both[:, 0::2] + both[:, 1::2]
                rel = both[:, 1::2]
            yield BlockCounts(sl, by_label, tot, rel)
        pool.shutdown()

    def _scan_counts(
        self,
        q_packed: np.ndarray,
        labels: np.ndarray,
        q_labels: np.ndarray | None,
        *,
        block: int | None,
    ) -> Iterator[BlockCounts]:
        """Single-label counts by the compiled scan (:func:`retrieval.scan.hamming_class_counts`):
        no distance block is materialised, only ``[b, K+1, C]`` counts per query block."""
        from retrieval.scan import hamming_class_counts

        q_words = self._queries(q_packed).view(np.uint64)
        words = self.codes.view(np.uint64)
        n_cls = int(labels.max()) + 1
        step = block or max(1, min(4096, BLOCK_ELEMS // ((self.n_bits + 1) * n_cls)))
        for start in range(0, len(q_words), step):
            sl = slice(start, min(start + step, len(q_words)))
            by_label = hamming_class_counts(
                words, q_words[sl], labels, n_classes=n_cls, n_bits=self.n_bits
            )
            rel = None if q_labels is None else _same_class(by_label, q_labels[sl])
            yield BlockCounts(sl, by_label, by_label.sum(axis=2), rel)


@dataclass(frozen=True)
class BlockCounts:
    """Counts for the queries ``sl``: ``by_label [b, K+1, C]`` database items of class / with label
    c at distance d; ``tot [b, K+1]`` all items at distance d; ``rel [b, K+1]`` the relevant ones
    (``None`` without query labels)."""

    sl: slice
    by_label: np.ndarray
    tot: np.ndarray
    rel: np.ndarray | None


def _same_class(by_label: np.ndarray, q_labels: np.ndarray) -> np.ndarray:
    """``int64 [b, K+1]``: items of each query's own class at each distance (0 for a query class
    the database lacks)."""
    n_cls = by_label.shape[2]
    own = np.minimum(q_labels, n_cls - 1)
    rel = by_label[np.arange(len(by_label)), :, own].astype(np.int64)
    return rel * (q_labels < n_cls)[:, None]


def _check_labels(labels: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """``labels`` as an array after refusing what every vote and metric would misread: int class
    ids ``[N]`` must be non-negative (a negative id indexed the last class), multi-hot ``[N, C]``
    labels must hold only 0 and 1 (a -1 or a 2 weighed votes differently on each path)."""
    if labels is None:
        raise RetrievalError(f"{what} labels are missing; pass one label per {what} item")
    arr = np.asarray(labels)
    if arr.ndim not in (1, 2) or len(arr) != n:
        raise RetrievalError(
            f"{what} labels have shape {arr.shape} but there are {n} {what} items; pass int class "
            "ids [N] or multi-hot labels [N, C] in the same order as the codes"
        )
    if arr.ndim == 1 and not np.issubdtype(arr.dtype, np.integer):
        raise RetrievalError(
            f"{what} labels must be non-negative int class ids, got {arr.dtype}; pass class ids "
            "0 .. C-1 as an int array (or multi-hot labels [N, C])"
        )
    if arr.ndim == 1 and n and arr.min() < 0:
        row = int(np.argmax(arr < 0))
        raise RetrievalError(
            f"{what} labels must be non-negative int class ids, got {arr[row]} (row {row}); "
            "map the classes to 0 .. C-1"
        )
    if arr.ndim == 2:
        check_multihot_01(arr, what)
    return arr


def _check_label_kinds(q_labels: np.ndarray, db_labels: np.ndarray) -> None:
    """Refuse query and database labels of different kinds (class ids vs multi-hot, or multi-hot
    with different label counts): relevance between them is undefined."""
    if q_labels.ndim != db_labels.ndim or (
        db_labels.ndim == 2 and q_labels.shape[1] != db_labels.shape[1]
    ):
        raise RetrievalError(
            f"query labels {q_labels.shape} and database labels {db_labels.shape} differ in "
            "kind; give both as class ids [N] or both as multi-hot [N, C]"
        )


def _row_counts(sorted_or_not: np.ndarray, n_values: int) -> np.ndarray:
    """``int64 [b, n_values]``: how often each value ``0 .. n_values-1`` occurs in each row."""
    b = sorted_or_not.shape[0]
    if sorted_or_not.shape[1] == 0:
        return np.zeros((b, n_values), dtype=np.int64)
    rows = np.sort(sorted_or_not, axis=1, kind="stable")  # radix sort for (u)int8/16
    grid = np.arange(n_values + 1)
    cum = np.empty((b, n_values + 1), dtype=np.int64)
    for i in range(b):
        cum[i] = np.searchsorted(rows[i], grid)
    return np.diff(cum, axis=1)


class FloatIndex:
    """Exact float search: ``IndexFlatL2`` (squared Euclidean) or cosine via ``IndexFlatIP`` on
    L2-normalised vectors (distance ``1 - cos``)."""

    def __init__(self, database: np.ndarray, *, metric: Metric = "euclidean") -> None:
        db = np.ascontiguousarray(np.asarray(database, dtype=np.float32))
        if db.ndim != 2 or len(db) == 0:
            raise RetrievalError(
                f"the float database must be a non-empty [N, D] array, got {db.shape}"
            )
        if metric not in ("euclidean", "cosine"):
            raise RetrievalError(f"metric={metric!r}: use 'euclidean' or 'cosine'")
        check_finite(db, "database")
        self.metric = metric
        if metric == "cosine":
            db = _normalise(db)
            self.index: Any = _faiss().IndexFlatIP(db.shape[1])
        else:
            self.index = _faiss().IndexFlatL2(db.shape[1])
        self.index.add(db)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise RetrievalError(
                f"queries have shape {q.shape} but the database has dimension {self.index.d}"
            )
        if len(q) == 0:
            raise RetrievalError("the query set is empty; pass at least one query")
        check_finite(q, "query")
        return _normalise(q) if self.metric == "cosine" else q

    def search(
        self, queries: np.ndarray, k: int, *, block: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances float32 [Q, k] ascending, ids int64 [Q, k])``."""
        k = check_k(k, self.ntotal)
        check_block(block)
        q = self.prepare(queries)
        dist = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), block):
            sl = slice(start, min(start + block, len(q)))
            d, i = self.index.search(q[sl], k)
            if (i < 0).any():  # faiss found fewer than k finite distances: never vote on id -1
                row = sl.start + int(np.flatnonzero((i < 0).any(axis=1))[0])
                raise RetrievalError(
                    f"faiss returned no neighbour (id -1) for query row {row}: its distances are "
                    "not finite in float32; rescale the embeddings before searching"
                )
            dist[sl], ids[sl] = (1.0 - d if self.metric == "cosine" else d), i
        return dist, ids


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, in float64 (a float32 vector's norm neither
    underflows nor overflows there). Every nonzero row is divided by its true norm, however small
    (a floor such as ``max(norm, 1e-12)`` left a row of norm 1e-20 at length 1e-8, and every
    cosine with it became 1); an all-zero row stays zero: its cosine distance is 1 to everything."""
    x64 = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x64, axis=-1, keepdims=True)
    return x64 / np.where(norm > 0, norm, 1.0)


def _normalise(x: np.ndarray) -> np.ndarray:
    """:func:`unit_rows` as float32."""
    return unit_rows(x).astype(np.float32)


def index_of(db_packed: np.ndarray, n_bits: int, index: Any = None) -> HammingIndex:
    """``index`` when it was built on ``db_packed`` at ``n_bits``, else a new
    :class:`HammingIndex` of them when ``index`` is None. An index of other codes is refused: a
    search would answer from its database, silently, while labels, storage and the caller name
    these codes (``index or HammingIndex(...)`` ignored the codes passed beside an index)."""
    if index is None:
        return HammingIndex(db_packed, n_bits)
    db = np.asarray(db_packed)
    width = math.ceil(n_bits / 8)
    if index.n_bits != n_bits:
        raise RetrievalError(
            f"the index holds {index.n_bits}-bit codes but n_bits={n_bits}; pass the index built "
            "on these database codes, or none"
        )
    if db.shape != (index.ntotal, width) or not np.array_equal(index.codes[:, :width], db):
        raise RetrievalError(
            f"the index was built on other database codes ({index.ntotal} rows) than db_packed "
            f"{db.shape}; pass the index built on these database codes, or none"
        )
    return index
