"""One call per search space for the stages: KNN predictions and ranking metrics in one pass.

:func:`hamming_report` runs the per-distance counts of :class:`retrieval.search.HammingIndex` once
and derives from them the tie-aware KNN predictions for every k (:mod:`retrieval.knn`) and the
tie-aware ranking metrics (:mod:`retrieval.ranking`), plus storage figures (bytes per item and
compression vs float32 embeddings). :func:`float_report` gives the same ranking metrics for the float
baseline on the same queries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.knn import _empty_predictions, tally_from_counts
from retrieval.ranking import RankingAccumulator, RankingReport, RankingSpec, float_ranking
from retrieval.search import HammingIndex, check_k, index_of


@dataclass(frozen=True)
class Report:
    """``predictions`` (k -> predictions), ``ranking`` (scalars + PR curves), ``scalars`` (the
    flat metric dict for JSON / MLflow: ranking scalars + storage + seconds)."""

    predictions: dict[int, np.ndarray]
    ranking: RankingReport
    scalars: dict[str, Any] = field(default_factory=dict)


def storage(n_bits: int | None, dim: int) -> dict[str, float]:
    """Bytes per database item and compression vs float32 embeddings of dimension ``dim``."""
    per_item = 4.0 * dim if n_bits is None else float(math.ceil(n_bits / 8))
    return {"bytes_per_item": per_item, "compression_ratio": 4.0 * dim / per_item}


def _labels(labels: np.ndarray | None, what: str) -> np.ndarray:
    if labels is None:
        raise RetrievalError(
            f"{what} labels are missing; retrieval metrics need labelled {what} items"
        )
    return np.asarray(labels)


def hamming_report(
    q_packed: np.ndarray,
    db_packed: np.ndarray,
    n_bits: int,
    q_labels: np.ndarray | None,
    db_labels: np.ndarray | None,
    ks: Sequence[int],
    *,
    spec: RankingSpec | None = None,
    float_dim: int | None = None,
    index: HammingIndex | None = None,
) -> Report:
    """KNN predictions for each k in ``ks`` (may be empty) and tie-aware ranking metrics of
    Hamming search, from one counts pass."""
    q_labels, db_labels = _labels(q_labels, "query"), _labels(db_labels, "database")
    start = time.perf_counter()
    index = index_of(db_packed, n_bits, index)
    for k in ks:
        check_k(k, index.ntotal)
    preds = _empty_predictions(ks, len(q_packed), db_labels) if ks else {}
    acc = RankingAccumulator(index.ntotal, spec or RankingSpec(), hamming=True)
    for c in index.counts(q_packed, db_labels, q_labels):
        for k in ks:
            preds[k][c.sl] = tally_from_counts(c.by_label, c.tot, k).decide(k, db_labels.ndim == 2)
        acc.update(c.tot, c.rel if c.rel is not None else np.zeros_like(c.tot))
    ranking = acc.result()
    scalars: dict[str, Any] = dict(ranking.scalars)
    if float_dim is not None:
        scalars.update(storage(n_bits, float_dim))
    scalars["retrieval_seconds"] = time.perf_counter() - start
    return Report(preds, ranking, scalars)


def float_report(
    queries: np.ndarray,
    database: np.ndarray,
    q_labels: np.ndarray | None,
    db_labels: np.ndarray | None,
    *,
    metric: str = "euclidean",
    spec: RankingSpec | None = None,
) -> Report:
    """Tie-aware ranking metrics of exact float search (the baseline on the same queries)."""
    q_labels, db_labels = _labels(q_labels, "query"), _labels(db_labels, "database")
    start = time.perf_counter()
    ranking = float_ranking(queries, database, q_labels, db_labels, metric=metric, spec=spec)
    scalars: dict[str, Any] = dict(ranking.scalars)
    scalars.update(storage(None, np.asarray(database).shape[1]))
    scalars["retrieval_seconds"] = time.perf_counter() - start
    return Report({}, ranking, scalars)
