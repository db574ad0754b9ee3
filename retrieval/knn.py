"""k-nearest-neighbour classification on float embeddings or Hamming codes.

Tie handling (documented, deterministic and independent of database order)
---------------------------------------------------------------------------
Hamming distances take only ``K + 1`` values, so the k-th nearest neighbour is usually tied with
many others, and an ``argsort`` would let the database order decide the prediction. Here every
database item strictly closer than the k-th distance ``d_k`` casts one vote, and the items *at*
``d_k`` share the remaining ``k - n_closer`` votes equally (each casts ``(k - n_closer) / n_tied``).
That equals the expected vote of a uniformly random tie order, so the result does not change when
the database is permuted. A remaining tie between classes goes to the lowest class index.
Multi-label: a label is predicted when its vote share exceeds one half.

Scores of the predictions live in :mod:`retrieval.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from retrieval.codes import iter_hamming_chunks

Metric = Literal["euclidean", "cosine"]


def tie_aware_votes(dist: np.ndarray, db_onehot: np.ndarray, k: int) -> np.ndarray:
    """Votes ``[Q, C]`` of the k nearest database items, splitting ties at the k-th distance.

    ``dist``: ``[Q, N]`` distances; ``db_onehot``: ``[N, C]`` one- or multi-hot labels.
    """
    n = dist.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the database size {n}")
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
    closer = (dist < kth).astype(np.float32)
    tied = (dist == kth).astype(np.float32)
    n_closer = closer.sum(axis=1, keepdims=True)
    share = (k - n_closer) / tied.sum(axis=1, keepdims=True)
    labels = db_onehot.astype(np.float32)
    return closer @ labels + share * (tied @ labels)


def float_distance_chunks(
    queries: np.ndarray, database: np.ndarray, *, metric: Metric = "euclidean", chunk: int = 1024
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(query slice, distances [chunk, N])`` for float vectors (squared Euclidean or cosine)."""
    db = torch.as_tensor(database, dtype=torch.float32)
    q_all = torch.as_tensor(queries, dtype=torch.float32)
    if metric == "cosine":
        db = torch.nn.functional.normalize(db, dim=1)
        q_all = torch.nn.functional.normalize(q_all, dim=1)
    elif metric != "euclidean":
        raise ValueError(f"metric={metric!r}: use 'euclidean' or 'cosine'")
    db_sq = (db * db).sum(dim=1)
    for start in range(0, q_all.shape[0], chunk):
        sl = slice(start, min(start + chunk, q_all.shape[0]))
        q = q_all[sl]
        if metric == "cosine":
            d: Tensor = 1.0 - q @ db.T
        else:  # squared distance has the same order as the distance
            d = ((q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ db.T) + db_sq).clamp_min(0.0)
        yield sl, d.numpy()


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
    multilabel = db_labels.ndim == 2
    if multilabel:
        onehot = db_labels.astype(np.float32)
    else:
        n_classes = int(db_labels.max()) + 1
        onehot = np.zeros((len(db_labels), n_classes), dtype=np.float32)
        onehot[np.arange(len(db_labels)), db_labels] = 1.0
    out = {
        k: np.zeros((n_queries, onehot.shape[1]), dtype=bool)
        if multilabel
        else np.zeros(n_queries, dtype=np.int64)
        for k in ks
    }
    for sl, dist in chunks:
        for k in ks:
            votes = tie_aware_votes(dist, onehot, k)
            out[k][sl] = votes > 0.5 * k if multilabel else votes.argmax(axis=1)
    return out


def knn_float(
    queries: np.ndarray,
    database: np.ndarray,
    db_labels: np.ndarray,
    ks: Sequence[int],
    *,
    metric: Metric = "euclidean",
) -> dict[int, np.ndarray]:
    """KNN predictions on float embeddings for each k in ``ks``."""
    return knn_predict(
        float_distance_chunks(queries, database, metric=metric),
        db_labels,
        ks,
        n_queries=len(queries),
    )


def knn_hamming(
    q_packed: np.ndarray,
    db_packed: np.ndarray,
    n_bits: int,
    db_labels: np.ndarray,
    ks: Sequence[int],
) -> dict[int, np.ndarray]:
    """KNN predictions on packed binary codes (Hamming distance) for each k in ``ks``."""
    return knn_predict(
        iter_hamming_chunks(q_packed, db_packed, n_bits), db_labels, ks, n_queries=len(q_packed)
    )
