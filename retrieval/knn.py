"""k-nearest-neighbour classification on float embeddings or Hamming codes.

Tie handling (documented, deterministic and independent of database order)
---------------------------------------------------------------------------
Hamming distances take only ``K + 1`` values, so the k-th nearest neighbour is usually tied with
many others, and an ``argsort`` would let the database order decide the prediction. Here every
database item strictly closer than the k-th distance ``d_k`` casts one vote, and the items *at*
``d_k`` share the remaining ``k - n_closer`` votes equally (each casts ``(k - n_closer) / n_tied``).
That equals the expected vote of a uniformly random tie order, so the result does not change when
the database is permuted. A remaining tie between classes goes to the lowest class index.
Multi-label: a label is predicted when its vote share exceeds one half. Both decisions compare the
exact integer tallies behind the votes (:class:`TieTally`), never rounded float32 votes: equal
expected votes reached by different sums (4 + 2/3 and 2 + 4·2/3) can round apart.

Where the distances come from
-----------------------------
:func:`knn_hamming` searches the codes with :class:`retrieval.search.HammingIndex` (its default
engine, the compiled scan of :mod:`retrieval.scan`; faiss only with ``engine="faiss"``) and
:func:`knn_float` the floats with faiss, both in bounded-memory query blocks, never building a
``[Q, N]`` matrix. Codes: the per-distance class
counts of :meth:`retrieval.search.HammingIndex.counts` give the k-th distance (the first distance
whose cumulative count reaches k), the closer items and the tied ones at once, for every k of a
sweep (:func:`votes_from_counts`). Floats: the ``k_max + pad`` nearest from faiss give the k-th
distance and the tied items; a query whose tie group may run past the returned list is searched
again over the whole database. :func:`tie_aware_votes` / :func:`knn_predict` on dense distance
chunks are the reference path (and the trainer's cheap per-epoch check); tests hold the two equal.

Scores of the predictions live in :mod:`retrieval.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from retrieval.errors import RetrievalError
from retrieval.search import (
    FloatIndex,
    HammingIndex,
    _check_labels,
    _normalise,
    check_finite,
    check_k,
    index_of,
)

Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class TieTally:
    """The integer counts behind tie-aware votes (numpy arrays, integer-valued).

    Per query and class, the database items strictly closer than the k-th distance (``closer
    [Q, C]``) and at it (``tied [Q, C]``); per query, how many items are closer (``n_closer
    [Q, 1]``) and tied (``n_tied [Q, 1]``). Class c's vote is ``closer + (k - n_closer) / n_tied
    · tied``.
    """

    closer: np.ndarray
    tied: np.ndarray
    n_closer: np.ndarray
    n_tied: np.ndarray

    def votes(self, k: int) -> np.ndarray:
        """Float32 votes ``[Q, C]`` (vote shares for model selection; not for decisions)."""
        f32 = np.float32
        share = (f32(k) - self.n_closer.astype(f32)) / self.n_tied.astype(f32)
        return self.closer.astype(f32) + share * self.tied.astype(f32)

    def decide(self, k: int, multilabel: bool) -> np.ndarray:
        """Class ids ``[Q]`` (lowest index among equal votes) or labels ``[Q, C]`` (vote share >
        1/2), decided on the exact numerators ``vote · n_tied``, which are integers."""
        n_tied = self.n_tied.astype(np.int64)
        num = self.closer.astype(np.int64) * n_tied + (
            k - self.n_closer.astype(np.int64)
        ) * self.tied.astype(np.int64)
        return 2 * num > k * n_tied if multilabel else num.argmax(axis=1)


def tie_tally(dist: np.ndarray, db_onehot: np.ndarray, k: int) -> TieTally:
    """:class:`TieTally` of the k nearest database items from dense distances ``[Q, N]`` and
    one- or multi-hot labels ``[N, C]``."""
    k = check_k(k, dist.shape[1])
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
    closer = (dist < kth).astype(np.float32)
    tied = (dist == kth).astype(np.float32)
    labels = db_onehot.astype(np.float32)
    return TieTally(
        closer @ labels,
        tied @ labels,
        closer.sum(axis=1, keepdims=True),
        tied.sum(axis=1, keepdims=True),
    )


def tie_aware_votes(dist: np.ndarray, db_onehot: np.ndarray, k: int) -> np.ndarray:
    """Votes ``[Q, C]`` of the k nearest database items, splitting ties at the k-th distance.

    ``dist``: ``[Q, N]`` distances; ``db_onehot``: ``[N, C]`` one- or multi-hot labels.
    """
    return tie_tally(dist, db_onehot, k).votes(k)


def float_pair(queries: np.ndarray | Tensor, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(queries, database)`` as C-contiguous float32 ``[Q, D]`` / ``[N, D]`` arrays (a view with
    negative strides, e.g. ``x[::-1]``, is copied: torch refuses those), after refusing arrays that
    are not 2-D or disagree in dimension. An empty query set (``[0, D]`` or ``[0]``) is allowed."""
    if isinstance(queries, Tensor):
        queries = queries.detach().cpu().numpy()
    db = np.ascontiguousarray(database, dtype=np.float32)
    if db.ndim != 2:
        raise RetrievalError(f"the float database must be an [N, D] array, got shape {db.shape}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.size == 0 and q.ndim == 1:
        q = q.reshape(0, db.shape[1])
    if q.ndim != 2 or q.shape[1] != db.shape[1]:
        raise RetrievalError(
            f"queries have shape {q.shape} but the database has dimension {db.shape[1]}; embed "
            "queries and database with the same backbone"
        )
    return q, db


def float_distance_chunks(
    queries: np.ndarray | Tensor,
    database: np.ndarray,
    *,
    metric: Metric = "euclidean",
    chunk: int = 1024,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(query slice, distances [chunk, N])`` for float vectors (squared Euclidean or cosine).

    Identical database rows get identical distances: they are computed once per distinct row and
    gathered (a matrix product rounds its tail columns differently, so two copies of one row could
    differ in the last bit and the database order decided between tied items). Cosine normalises
    in float64 by the true norm (:func:`retrieval.search.unit_rows`: a zero vector stays zero)."""
    if metric not in ("euclidean", "cosine"):
        raise RetrievalError(f"metric={metric!r}: use 'euclidean' or 'cosine'")
    q_np, db_np = float_pair(queries, database)
    check_finite(db_np, "database")
    check_finite(q_np, "query")
    rows = db_np.view(np.dtype((np.void, db_np.dtype.itemsize * db_np.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    gather = None if len(first) == len(db_np) else inverse.reshape(-1)
    db_np = db_np if gather is None else db_np[first]
    if metric == "cosine":
        db_np, q_np = _normalise(db_np), _normalise(q_np)
    db, q_all = torch.from_numpy(db_np), torch.from_numpy(q_np)
    db_sq = (db * db).sum(dim=1)
    for start in range(0, q_all.shape[0], chunk):
        sl = slice(start, min(start + chunk, q_all.shape[0]))
        q = q_all[sl]
        if metric == "cosine":
            d: Tensor = 1.0 - q @ db.T
        else:  # squared distance has the same order as the distance
            d = ((q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ db.T) + db_sq).clamp_min(0.0)
        yield sl, d.numpy() if gather is None else d.numpy()[:, gather]


def knn_predict(
    chunks: Iterable[tuple[slice, np.ndarray]],
    db_labels: np.ndarray,
    ks: Sequence[int],
    *,
    n_queries: int,
) -> dict[int, np.ndarray]:
    """Predictions for each k in ``ks`` from a stream of distance chunks.

    ``db_labels``: int ``[N]`` (single-label) or 0/1 ``[N, C]`` (multi-label). Returns int class ids
    ``[Q]`` for single-label, bool ``[Q, C]`` for multi-label.
    """
    onehot = _onehot(db_labels, None)
    multilabel = np.ndim(db_labels) == 2
    out = {
        k: np.zeros((n_queries, onehot.shape[1]), dtype=bool)
        if multilabel
        else np.zeros(n_queries, dtype=np.int64)
        for k in ks
    }
    for sl, dist in chunks:
        for k in ks:
            out[k][sl] = tie_tally(dist, onehot, k).decide(k, multilabel)
    return out


def tally_from_counts(by_label: np.ndarray, tot: np.ndarray, k: int) -> TieTally:
    """:class:`TieTally` from per-distance counts: ``by_label [Q, G, C]`` items of each class at
    each distance group (ascending), ``tot [Q, G]`` all items there."""
    cum = np.cumsum(tot, axis=1)
    k = check_k(k, int(cum[0, -1]))
    g = np.argmax(cum >= k, axis=1)  # the group holding the k-th item
    rows = np.arange(len(tot))
    n_closer = (cum[rows, g] - tot[rows, g])[:, None]
    closer = np.cumsum(by_label, axis=1)[rows, g] - by_label[rows, g]
    return TieTally(closer, by_label[rows, g], n_closer, tot[rows, g][:, None])


def votes_from_counts(by_label: np.ndarray, tot: np.ndarray, k: int) -> np.ndarray:
    """:func:`tie_aware_votes` from per-distance counts (:func:`tally_from_counts`); the same
    float32 arithmetic as the dense path, so the votes are bit-identical."""
    return tally_from_counts(by_label, tot, k).votes(k)


def _onehot(db_labels: np.ndarray | None, n_db: int | None) -> np.ndarray:
    """float32 ``[N, C]`` one-hot (class ids) or multi-hot labels, after
    :func:`retrieval.search._check_labels` (non-negative int ids, multi-hot 0/1 only)."""
    if n_db is None:  # the labels' own length: only their kind and values are checked
        n_db = len(db_labels) if db_labels is not None and np.ndim(db_labels) > 0 else 0
    db_labels = _check_labels(db_labels, n_db, "database")
    if db_labels.ndim == 2:
        return db_labels.astype(np.float32)
    onehot = np.zeros((len(db_labels), int(db_labels.max()) + 1), dtype=np.float32)
    onehot[np.arange(len(db_labels)), db_labels] = 1.0
    return onehot


def _empty_predictions(
    ks: Sequence[int], n_queries: int, db_labels: np.ndarray
) -> dict[int, np.ndarray]:
    if db_labels is None:
        raise RetrievalError("database labels are missing; KNN needs one label per database item")
    if len(ks) == 0:
        raise RetrievalError("no k given; pass at least one k")
    shape = (n_queries, db_labels.shape[1]) if db_labels.ndim == 2 else (n_queries,)
    return {k: np.zeros(shape, dtype=bool if db_labels.ndim == 2 else np.int64) for k in ks}


def knn_float(
    queries: np.ndarray,
    database: np.ndarray,
    db_labels: np.ndarray,
    ks: Sequence[int],
    *,
    metric: Metric = "euclidean",
    index: FloatIndex | None = None,
) -> dict[int, np.ndarray]:
    """KNN predictions on float embeddings for each k in ``ks`` (faiss ``IndexFlatL2`` / inner
    product; tie rule as in the module docstring)."""
    index = index or FloatIndex(database, metric=metric)
    db_labels = np.asarray(db_labels) if db_labels is not None else None
    out = _empty_predictions(ks, len(queries), db_labels)
    onehot = _onehot(db_labels, index.ntotal)
    # every k: a k <= 0 read a column from the end, or broke the broadcast; Python ints for faiss
    ks = [check_k(k, index.ntotal) for k in ks]
    k_max = max(ks)
    fetch = min(index.ntotal, k_max + max(k_max, 16))
    multilabel = db_labels.ndim == 2
    queries = np.asarray(queries)
    index.prepare(queries)  # shape / emptiness checks before any work
    for start in range(0, len(queries), 4096):
        sl = slice(start, min(start + 4096, len(queries)))
        dist, ids = index.search(queries[sl], fetch)
        # a tie at the k_max-th distance may run past the fetched list: rank every item
        overflow = (dist[:, -1] == dist[:, k_max - 1]) & (fetch < index.ntotal)
        for row in np.flatnonzero(overflow):
            d_all, i_all = index.search(queries[sl][row : row + 1], index.ntotal)
            for k in ks:
                tally = tie_tally(d_all, onehot[i_all[0]], k)
                out[k][start + row] = tally.decide(k, multilabel)[0]
        keep = ~overflow
        for k in ks:
            tally = tally_from_sorted(dist[keep], onehot[ids[keep]], k)
            out[k][np.arange(sl.start, sl.stop)[keep]] = tally.decide(k, multilabel)
    return out


def tally_from_sorted(dist: np.ndarray, labels: np.ndarray, k: int) -> TieTally:
    """:class:`TieTally` from each query's nearest items (ascending ``dist [b, m]``, their labels
    ``[b, m, C]``), valid when the tie group at the k-th distance ends inside the list."""
    kth = dist[:, k - 1 : k]
    closer = (dist < kth).astype(np.float32)
    tied = (dist == kth).astype(np.float32)
    return TieTally(
        np.einsum("bm,bmc->bc", closer, labels),
        np.einsum("bm,bmc->bc", tied, labels),
        closer.sum(axis=1, keepdims=True),
        tied.sum(axis=1, keepdims=True),
    )


def knn_hamming(
    q_packed: np.ndarray,
    db_packed: np.ndarray,
    n_bits: int,
    db_labels: np.ndarray,
    ks: Sequence[int],
    *,
    index: HammingIndex | None = None,
) -> dict[int, np.ndarray]:
    """KNN predictions on packed binary codes (Hamming distance) for each k in ``ks``, from the
    per-distance class counts of :class:`HammingIndex` (the compiled scan by default; a faiss
    ``IndexBinaryFlat`` with ``engine="faiss"``)."""
    index = index_of(db_packed, n_bits, index)
    db_labels = np.asarray(db_labels) if db_labels is not None else None
    out = _empty_predictions(ks, len(q_packed), db_labels)
    ks = [check_k(k, index.ntotal) for k in ks]  # a k of 2.5 voted as a "2.5-NN"
    for c in index.counts(q_packed, db_labels):
        for k in ks:
            out[k][c.sl] = tally_from_counts(c.by_label, c.tot, k).decide(k, db_labels.ndim == 2)
    return out
