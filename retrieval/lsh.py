"""Multi-table LSH candidate search: exact-bucket lookups over several hash tables.

The classic multi-table LSH experiment (Charikar, STOC 2002; Gionis, Indyk & Motwani, VLDB 1999):
each table hashes the database with its own hyperplanes, a query's candidates are the database rows
that share its exact code in at least one table, and only those are ranked. The codes come from
:meth:`hashers.baselines.LSH.encode_tables` (bool ``[T, N, K]``); nothing here knows how they were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import Tensor

from retrieval.codes import pack_bits
from retrieval.errors import RetrievalError
from retrieval.search import unit_rows


def _as_codes(codes: np.ndarray | Tensor, what: str) -> np.ndarray:
    arr = codes.cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if arr.ndim != 3:
        raise RetrievalError(f"{what} must be bool [tables, N, bits], got shape {arr.shape}")
    if arr.dtype != np.bool_:  # a cast to bool read every -1 sign or real projection as bit 1
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            t, row, bit = (int(i) for i in np.argwhere(bad)[0])
            raise RetrievalError(
                f"{what} must be bool codes (or 0/1), got {arr.dtype} value {arr[t, row, bit]} "
                f"(table {t}, row {row}, bit {bit}); binarise signs or projections first "
                "(bit = value > 0, as LSH.encode_tables does)"
            )
    return arr.astype(bool, copy=False)


def _check_finite(x: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite float vectors ``[n, D]``: their distances are NaN, which sort last or
    (a NaN query) leave the candidates in index order, returned as if they were the nearest."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise RetrievalError(
            f"{len(rows)} float {what} vector(s) hold NaN or infinite values (first row "
            f"{int(rows[0])}); fix or drop them before re-ranking (e.g. re-run the extract stage)"
        )


def _first_copy(x: np.ndarray) -> np.ndarray:
    """``int64 [n]``: for each row of ``x`` the index of its first identical row (``-0.0`` equal to
    ``0.0``), so identical rows get one distance, computed once."""
    if x.shape[1] == 0 or len(x) == 0:  # no coordinates: every row is the same empty vector
        return np.zeros(len(x), dtype=np.int64)
    key = np.ascontiguousarray(x + 0.0)  # -0.0 + 0.0 = 0.0: equal values, equal bytes
    rows = key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def multi_table_candidates(
    query_codes: np.ndarray | Tensor, db_codes: np.ndarray | Tensor
) -> list[np.ndarray]:
    """Candidates of each query: database rows whose code equals the query's in at least one table.

    ``query_codes``: bool ``[T, Q, K]``; ``db_codes``: bool ``[T, N, K]``. Returns ``Q`` sorted,
    duplicate-free ``int64`` index arrays (the union over tables of the query's exact buckets).
    Buckets are found by sorting each table's database codes once and binary-searching every query
    code, so the cost is ``O(T (N + Q) log N)`` plus the size of the answer.
    """
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    if q.shape[0] != d.shape[0] or q.shape[2] != d.shape[2]:
        raise RetrievalError(
            f"query codes {q.shape} and database codes {d.shape} differ in tables or bits; "
            "encode both with the same LSH"
        )
    n_tables, n_q, _ = q.shape
    n_db = d.shape[1]
    tables = []
    for t in range(n_tables):
        keys = np.concatenate([pack_bits(d[t]), pack_bits(q[t])])
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        db_ids, q_ids = inverse[:n_db], inverse[n_db:]
        order = np.argsort(db_ids, kind="stable")
        sorted_ids = db_ids[order]
        lo = np.searchsorted(sorted_ids, q_ids, side="left")
        hi = np.searchsorted(sorted_ids, q_ids, side="right")
        tables.append((order, lo, hi))
    out = []
    for i in range(n_q):
        hits = [order[lo[i] : hi[i]] for order, lo, hi in tables if hi[i] > lo[i]]
        out.append(
            np.unique(np.concatenate(hits)).astype(np.int64)
            if hits
            else np.zeros(0, dtype=np.int64)
        )
    return out


@dataclass(frozen=True)
class MultiTableResult:
    """``indices [Q, k]`` (−1 = fewer than k candidates), ``distances [Q, k]`` (inf there),
    ``n_candidates [Q]`` (candidate-set sizes: the work a re-ranking step does)."""

    indices: np.ndarray
    distances: np.ndarray
    n_candidates: np.ndarray

    def recall_at(self, true_nn: Sequence[int] | np.ndarray) -> float:
        """Fraction of queries whose true nearest neighbour is among the returned ``k``."""
        true_nn = np.asarray(true_nn).reshape(-1, 1)
        return float((self.indices == true_nn).any(axis=1).mean())


def multi_table_knn(
    query_codes: np.ndarray | Tensor,
    db_codes: np.ndarray | Tensor,
    k: int,
    *,
    rerank: Literal["hamming", "euclidean", "cosine"] = "hamming",
    queries: np.ndarray | Tensor | None = None,
    database: np.ndarray | Tensor | None = None,
) -> MultiTableResult:
    """The ``k`` nearest candidates of each query, re-ranked among :func:`multi_table_candidates`.

    ``rerank``: ``"hamming"`` ranks by the Hamming distance over the concatenation of all tables'
    codes (``T x K`` bits: a finer angle estimate than any single table, and it needs only codes);
    ``"euclidean"`` / ``"cosine"`` rank by the float distance between ``queries`` ``[Q, D]`` and
    ``database`` ``[N, D]`` (E2LSH-style: hashing only prunes, exact distances decide; NaN or
    infinite vectors are refused). Ties, copies of one database row included (their float distance
    is computed once), are broken by the lower database index, so the result never depends on
    hash-table order. A query
    with fewer than ``k`` candidates gets ``-1`` / ``inf`` padding (no fallback to a full scan).
    """
    if k < 1:
        raise RetrievalError(f"k={k} must be >= 1")
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    cands = multi_table_candidates(q, d)
    if rerank == "hamming":
        pass
    elif rerank in ("euclidean", "cosine"):
        if queries is None or database is None:
            raise RetrievalError(f"rerank={rerank!r} needs the float queries and database")
        qx = np.asarray(queries.cpu() if isinstance(queries, Tensor) else queries, dtype=np.float64)
        dx = np.asarray(
            database.cpu() if isinstance(database, Tensor) else database, dtype=np.float64
        )
        if len(qx) != q.shape[1] or len(dx) != d.shape[1]:
            raise RetrievalError(
                f"{len(qx)} float queries / {len(dx)} float database rows for {q.shape[1]} query "
                f"codes / {d.shape[1]} database codes; pass the embeddings the codes were made "
                "from, in the same order"
            )
        if qx.ndim != 2 or dx.ndim != 2 or qx.shape[1] != dx.shape[1]:  # [Q, 1] broadcast
            raise RetrievalError(
                f"float queries {qx.shape} and float database {dx.shape} must be [Q, D] and "
                "[N, D] with the same D; embed both with the same backbone"
            )
        _check_finite(qx, "query")
        _check_finite(dx, "database")
        if rerank == "cosine":
            qx, dx = unit_rows(qx), unit_rows(dx)  # the true norm, however small; 0 stays 0
        first = _first_copy(dx)
    else:
        raise RetrievalError(f"rerank={rerank!r}: use 'hamming', 'euclidean' or 'cosine'")
    n_q = q.shape[1]
    indices = np.full((n_q, k), -1, dtype=np.int64)
    distances = np.full((n_q, k), np.inf)
    for i, c in enumerate(cands):
        if len(c) == 0:
            continue
        if rerank == "hamming":
            dist = (d[:, c, :] != q[:, i : i + 1, :]).sum(axis=(0, 2)).astype(np.float64)
        else:  # once per distinct row: a BLAS product rounds copies of one row apart
            rows, inv = np.unique(first[c], return_inverse=True)
            if rerank == "euclidean":
                dist = np.sqrt(((dx[rows] - qx[i]) ** 2).sum(axis=1))[inv.reshape(-1)]
            else:
                dist = (1.0 - dx[rows] @ qx[i])[inv.reshape(-1)]
        top = np.argsort(dist, kind="stable")[:k]  # c is sorted, so ties go to the lower index
        indices[i, : len(top)] = c[top]
        distances[i, : len(top)] = dist[top]
    return MultiTableResult(indices, distances, np.array([len(c) for c in cands], dtype=np.int64))
