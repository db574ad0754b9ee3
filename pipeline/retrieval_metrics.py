"""Retrieval metrics for the ``knn`` (float) and ``evaluate`` (Hamming) stages: one call each.

Both stages score the same queries (test split) against the same database (train split) with the
tie-aware ranking metrics of :mod:`retrieval.ranking` and report the names listed in
``retrieval.metrics`` (params), flat, so they land in the stage's metrics JSON and MLflow beside
the KNN scores. With ``retrieval.rerank`` the evaluate stage also scores the two-stage search
(Hamming shortlist of ``retrieval.shortlist`` re-ranked by cosine), as ``rerank_*``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.artifacts import EmbeddingsFile
from pipeline.config import Params
from retrieval.errors import RetrievalError
from retrieval.evaluation import float_report, hamming_report
from retrieval.ranking import RankingSpec
from retrieval.rerank import rerank, rerank_knn, rerank_ranking
from retrieval.search import HammingIndex


def ranking_spec(params: Params) -> RankingSpec:
    r = params.retrieval
    return RankingSpec(map_at=r.map_at, precision_at=r.precision_at, radius=r.radius)


def _pick(params: Params, scalars: dict[str, Any]) -> dict[str, Any]:
    return {name: scalars[name] for name in params.retrieval.metrics if name in scalars}


def float_retrieval_metrics(params: Params, emb: EmbeddingsFile) -> dict[str, Any]:
    """Tie-aware ranking metrics of the float baseline (``knn.metric`` distance)."""
    rep = float_report(
        emb.x["test"],
        emb.x["train"],
        emb.y["test"],
        emb.y["train"],
        metric=params.knn.metric,
        spec=ranking_spec(params),
    )
    return _pick(params, rep.scalars)


def code_retrieval_metrics(
    params: Params, emb: EmbeddingsFile, codes: dict[str, np.ndarray], n_bits: int
) -> dict[str, Any]:
    """Tie-aware ranking metrics of Hamming search on the released codes (+ two-stage if asked)."""
    r = params.retrieval
    if r.shortlist < params.knn.k:
        raise RetrievalError(
            f"retrieval.shortlist R={r.shortlist} is smaller than knn.k={params.knn.k}; "
            "re-ranking needs R >= k: raise retrieval.shortlist"
        )
    index = HammingIndex(codes["train"], n_bits)
    rep = hamming_report(
        codes["test"],
        codes["train"],
        n_bits,
        emb.y["test"],
        emb.y["train"],
        [],
        spec=ranking_spec(params),
        float_dim=emb.dim,
        index=index,
    )
    out = _pick(params, rep.scalars)
    if r.rerank:
        shortlist = min(r.shortlist, index.ntotal)
        res = rerank(
            codes["test"],
            codes["train"],
            n_bits,
            emb.x["test"],
            emb.x["train"],
            shortlist=shortlist,
            k=params.knn.k,
            index=index,
            block=max(1, (1 << 24) // (shortlist * emb.dim)),
        )
        pred = rerank_knn(res, emb.y["train"], [params.knn.k])[params.knn.k]
        y = emb.y["test"]
        out["rerank_accuracy"] = float(
            (pred == y.astype(bool)).all(axis=1).mean() if emb.multilabel else (pred == y).mean()
        )
        ranked = rerank_ranking(
            res, index, codes["test"], y, emb.y["train"], spec=ranking_spec(params)
        )
        out.update({f"rerank_{k}": v for k, v in _pick(params, ranked.scalars).items()})
    return out
