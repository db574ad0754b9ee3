"""Retrieval metrics for the ``knn`` (float) and ``evaluate`` (Hamming) stages: one call each.

Both stages score the same queries (test split) against the same database (train split) with the
tie-aware ranking metrics of :mod:`retrieval.ranking` and report the names listed in
``retrieval.metrics`` (params), flat, so they land in the stage's metrics JSON and MLflow beside
the KNN scores. With ``retrieval.rerank`` the evaluate stage also scores the two-stage search
(Hamming shortlist of ``retrieval.shortlist`` re-ranked by cosine), as ``rerank_*``.

Each call also returns the tie-aware precision-recall curve by rank cut-off
(:attr:`retrieval.ranking.RankingReport.pr_rank`), which the stages write as a CSV (DVC plot,
``cutoff,recall,precision``) and a PNG (:func:`write_pr_curve`), and, on request, the query
latency of Hamming-only, two-stage and float-only search (:func:`search_latency`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import ArtifactError, EmbeddingsFile, atomic_path, write_csv
from pipeline.config import Params
from retrieval.errors import RetrievalError
from retrieval.evaluation import float_report, hamming_report
from retrieval.ranking import RankingSpec
from retrieval.rerank import rerank, rerank_knn, rerank_ranking
from retrieval.search import FloatIndex, HammingIndex

#: test queries timed for the latency figures (the first ones; enough for a stable mean)
LATENCY_QUERIES = 1000
WARM_UP_QUERIES = 8  # untimed queries that load the kernels before each timed search
#: PR curve columns of the CSV (DVC plot: x = recall, y = precision)
PR_COLUMNS = ("cutoff", "recall", "precision")


@dataclass(frozen=True)
class RetrievalResult:
    """``scalars``: the flat metrics for the JSON; ``curves``: label -> PR rows (by rank cut-off),
    the first one the stage's own search; ``latency``: ms per query of each search, when asked."""

    scalars: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]
    latency: dict[str, Any] = field(default_factory=dict)


def ranking_spec(params: Params) -> RankingSpec:
    r = params.retrieval
    return RankingSpec(map_at=r.map_at, precision_at=r.precision_at, radius=r.radius)


def _pick(params: Params, scalars: dict[str, Any]) -> dict[str, Any]:
    return {name: scalars[name] for name in params.retrieval.metrics if name in scalars}


def _pr_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in PR_COLUMNS} for r in rows]


def float_retrieval(params: Params, emb: EmbeddingsFile) -> RetrievalResult:
    """Tie-aware ranking metrics and PR curve of the float baseline (``knn.metric`` distance)."""
    rep = float_report(
        emb.x["test"],
        emb.x["train"],
        emb.y["test"],
        emb.y["train"],
        metric=params.knn.metric,
        spec=ranking_spec(params),
    )
    return RetrievalResult(_pick(params, rep.scalars), {"float": _pr_rows(rep.ranking.pr_rank)})


def _timed(fn: Callable[[], Any], warm_up: Callable[[], Any]) -> float:
    """Seconds of one ``fn()`` call, after one untimed ``warm_up()`` (the same search on a few
    queries): the first call in a process loads, or on a fresh checkout compiles, the numba
    kernels, which would otherwise be timed as search."""
    warm_up()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def search_latency(
    params: Params,
    emb: EmbeddingsFile,
    codes: dict[str, np.ndarray],
    n_bits: int,
    index: HammingIndex,
    *,
    max_queries: int = LATENCY_QUERIES,
) -> dict[str, Any]:
    """Measured ms per query of top-``knn.k`` search for the first ``max_queries`` test queries
    (all in one call each, one after the other in this process): Hamming only (the
    :class:`retrieval.search.HammingIndex` the stage built), two-stage (shortlist of ``retrieval.shortlist`` by Hamming + cosine
    re-rank, :func:`retrieval.rerank.rerank`) and float only (cosine, faiss ``IndexFlatIP``).
    Index builds are not timed, and each search runs once untimed on a few queries first
    (:func:`_timed`). Timings depend on the machine and its load: never
    byte-identical, so they go to their own JSON, not the metrics one."""
    k, shortlist = params.knn.k, min(params.retrieval.shortlist, index.ntotal)
    q_codes, q_float = codes["test"][:max_queries], emb.x["test"][:max_queries]
    flat = FloatIndex(emb.x["train"], metric="cosine")

    def two_stage(n: int) -> Any:
        return rerank(
            q_codes[:n],
            codes["train"],
            n_bits,
            q_float[:n],
            emb.x["train"],
            shortlist=shortlist,
            k=k,
            index=index,
            block=_rerank_block(shortlist, emb.dim),
        )

    w = min(WARM_UP_QUERIES, len(q_codes))
    seconds = {
        "hamming": _timed(lambda: index.search(q_codes, k), lambda: index.search(q_codes[:w], k)),
        "two_stage": _timed(lambda: two_stage(len(q_codes)), lambda: two_stage(w)),
        "float": _timed(lambda: flat.search(q_float, k), lambda: flat.search(q_float[:w], k)),
    }
    out: dict[str, Any] = {
        "k": k,
        "shortlist": shortlist,
        "n_queries": len(q_codes),
        "n_database": index.ntotal,
    }
    out.update({f"latency_ms_{name}": 1000.0 * t / len(q_codes) for name, t in seconds.items()})
    return out


def _rerank_block(shortlist: int, dim: int) -> int:
    """Queries per re-rank block: about 16M gathered floats."""
    return max(1, (1 << 24) // (shortlist * dim))


def code_retrieval(
    params: Params,
    emb: EmbeddingsFile,
    codes: dict[str, np.ndarray],
    n_bits: int,
    *,
    latency: bool = False,
) -> RetrievalResult:
    """Tie-aware ranking metrics and PR curve of Hamming search on the released codes, plus the
    two-stage search (``retrieval.rerank``: metrics + PR curve) and, with ``latency``, the
    latency of Hamming-only, two-stage and float-only search (:func:`search_latency`)."""
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
    curves = {"hamming": _pr_rows(rep.ranking.pr_rank)}
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
            block=_rerank_block(shortlist, emb.dim),
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
        curves["two_stage"] = _pr_rows(ranked.pr_rank)
    timing = search_latency(params, emb, codes, n_bits, index) if latency else {}
    return RetrievalResult(out, curves, timing)


def read_pr_curve(path: Path) -> list[dict[str, Any]]:
    """A PR curve CSV written by :func:`write_pr_curve` (the float baseline's, for overlays)."""
    import csv

    if not path.is_file():
        raise ArtifactError(f"{path}: file not found; run the knn stage that writes it first")
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:  # e.g. the PNG written beside the CSV
        raise ArtifactError(
            f"{path}: not a PR curve CSV ({err}); pass the .csv the knn stage writes "
            f"({','.join(PR_COLUMNS)}), not the .png beside it"
        ) from err
    if not rows or any(c not in rows[0] for c in PR_COLUMNS):
        raise ArtifactError(
            f"{path}: not a PR curve CSV (columns {', '.join(PR_COLUMNS)}); re-run the knn stage"
        )
    out = []
    for i, r in enumerate(rows, start=1):
        try:
            out.append({"cutoff": int(r["cutoff"]), **{c: float(r[c]) for c in PR_COLUMNS[1:]}})
        except (TypeError, ValueError) as err:  # an empty or missing field is None / ''
            values = ", ".join(f"{c}={r.get(c)!r}" for c in PR_COLUMNS)
            raise ArtifactError(
                f"{path}: data row {i} ({values}) is not an integer cut-off and two numbers; "
                "re-run the knn stage that writes it"
            ) from err
    return out


def write_pr_curve(
    csv_path: Path, curves: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str
) -> None:
    """The first curve of ``curves`` as CSV (``cutoff,recall,precision``; a DVC plot) and every
    curve in one PNG beside it (same name, ``.png``). Atomic like every stage output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(curves.values()))
    write_csv(csv_path, first)
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (label, rows) in enumerate(curves.items()):
        ax.plot(
            [row["recall"] for row in rows],
            [row["precision"] for row in rows],
            linestyle="--" if label == "float" and i > 0 else "-",
            marker=".",
            label=label,
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(csv_path.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
