"""Stage ``knn``: the float-embedding KNN baseline (database = train, queries = test).

Writes the metrics JSON at ``knn.k`` (DVC metrics), a k-sweep CSV (DVC plot), and the confusion
matrix at ``knn.k`` as JSON and PNG. Ties are split as documented in :mod:`retrieval.knn`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from pipeline.artifacts import (
    EmbeddingsFile,
    atomic_outputs,
    check_writable,
    fingerprint_record,
    load_embeddings,
    write_csv,
    write_json,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import KnnConfig, Params, to_dict
from pipeline.data import class_names_from_meta
from pipeline.plots import confusion_png
from pipeline.retrieval_metrics import float_retrieval, write_pr_curve
from retrieval.knn import knn_float
from retrieval.metrics import chance_balanced_accuracy, classification_metrics, confusion

log = logging.getLogger(__name__)


def sweep_metrics(
    y_true: np.ndarray, preds: dict[int, np.ndarray], n_classes: int
) -> list[dict[str, Any]]:
    """One row per k: accuracy, macro-F1, balanced accuracy."""
    return [{"k": k, **classification_metrics(y_true, preds[k])} for k in sorted(preds)]


def float_knn(
    emb: EmbeddingsFile, config: KnnConfig
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """KNN of test queries against the train database for k and every k of the sweep."""
    ks = sorted({config.k, *config.k_sweep})
    config.check_database(len(emb.y["train"]))
    preds = knn_float(emb.x["test"], emb.x["train"], emb.y["train"], ks, metric=config.metric)
    return sweep_metrics(emb.y["test"], preds, emb.n_classes), preds


def write_knn_outputs(
    *,
    emb: EmbeddingsFile,
    rows: list[dict[str, Any]],
    pred: np.ndarray,
    k: int,
    metrics_path: Path,
    sweep_path: Path,
    confusion_path: Path,
    run: tracking.StageRun,
    extra: dict[str, Any] | None = None,
    title: str,
    write_more: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Shared by the float (knn) and Hamming (evaluate) stages: metrics, sweep CSV, confusion and
    whatever ``write_more`` writes (PR curves). The files land together
    (:func:`pipeline.artifacts.atomic_outputs`); the confusion PNG goes to MLflow once it has
    landed."""
    at_k = next(r for r in rows if r["k"] == k)
    metrics = {
        "k": k,
        "n_queries": len(emb.y["test"]),
        "n_database": len(emb.y["train"]),
        # the best input-blind score on these queries: the report's near-chance warning
        "chance_balanced_accuracy": chance_balanced_accuracy(emb.y["test"]),
    }
    metrics.update({key: v for key, v in at_k.items() if key != "k"})
    metrics.update(extra or {})
    with atomic_outputs():
        write_csv(sweep_path, rows)
        if write_more is not None:
            write_more()
        names = class_names_from_meta(emb.meta, emb.n_classes)
        if not emb.multilabel:
            cm = confusion(emb.y["test"], pred, emb.n_classes)
            write_json(
                confusion_path.with_suffix(".json"), {"labels": names, "matrix": cm.tolist()}
            )
            confusion_png(confusion_path, cm, names, title=title)
        else:  # the JSON is still written: DVC declares the confusion folder as an output
            write_json(
                confusion_path.with_suffix(".json"),
                {"labels": names, "matrix": None, "why": MULTILABEL_NO_CONFUSION},
            )
        tracking.record_metrics(metrics_path, metrics, run)
        for r in rows:
            run.log_metrics(
                {f"sweep/{key}": v for key, v in r.items() if key != "k"}, step=int(r["k"])
            )
    if confusion_path.is_file():
        run.log_artifact(confusion_path)
    return metrics


MULTILABEL_NO_CONFUSION = "multi-label: a query holds several labels, so no confusion matrix"


def knn_outputs(metrics: Path, sweep: Path, confusion_png_path: Path) -> tuple[Path, ...]:
    """Every file the knn / evaluate stage writes (checked writable before any work)."""
    return (metrics, sweep, confusion_png_path, confusion_png_path.with_suffix(".json"))


def pr_outputs(pr: Path | None) -> tuple[Path, ...]:
    """The PR curve CSV and the PNG beside it (none without ``--pr``)."""
    return () if pr is None else (pr, pr.with_suffix(".png"))


def predictions_record(emb: EmbeddingsFile, pred: np.ndarray, k: int) -> dict[str, Any]:
    """The float KNN's test predictions at ``k``, for evaluate's retention intervals: one class id
    per test query in file order (null for multi-label sets, which have no interval). Local file
    only: never logged to MLflow."""
    return {
        "k": k,
        "embeddings_fingerprint": emb.fingerprint,
        "n_queries": len(emb.y["test"]),
        "pred": None if emb.multilabel else pred.astype(np.int64).tolist(),
    }


def run_knn(
    params: Params,
    *,
    dataset: str,
    embeddings: Path,
    metrics: Path,
    sweep: Path,
    confusion_png_path: Path,
    pr: Path | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """``predictions``: a JSON of the test predictions at ``knn.k`` (:func:`predictions_record`),
    which evaluate reads for the bootstrap interval of each retention."""
    check_writable(
        *knn_outputs(metrics, sweep, confusion_png_path),
        *pr_outputs(pr),
        *(() if predictions is None else (predictions,)),
    )
    emb = load_embeddings(embeddings, dataset=dataset)
    params.knn.check_database(len(emb.y["train"]))
    tags = {"dataset": dataset, "backbone": emb.backbone, "embeddings": emb.fingerprint}
    with tracking.stage_run(params.tracking, name=f"knn@{dataset}", tags=tags) as run:
        run.log_params({"knn": to_dict(params.knn), "backbone": emb.backbone, "dim": emb.dim})
        t0 = time.perf_counter()
        rows, preds = float_knn(emb, params.knn)
        seconds = time.perf_counter() - t0
        ranked = float_retrieval(params, emb)
        extra = {
            "metric_space": params.knn.metric,
            # evaluate refuses to compare codes with a baseline made from other embeddings; the
            # public digests let curves and report check DP heads' and releases' files too
            **fingerprint_record(emb),
            **ranked.scalars,
        }

        def write_more() -> None:
            if pr is not None:
                write_pr_curve(pr, ranked.curves, title=f"{dataset}: float PR")
            if predictions is not None:
                write_json(predictions, predictions_record(emb, preds[params.knn.k], params.knn.k))

        out = write_knn_outputs(
            emb=emb,
            rows=rows,
            pred=preds[params.knn.k],
            k=params.knn.k,
            metrics_path=metrics,
            sweep_path=sweep,
            confusion_path=confusion_png_path,
            run=run,
            extra=extra,
            title=f"{dataset}: float KNN (k={params.knn.k})",
            write_more=write_more,
        )
        # timing goes to MLflow only: the JSON is a dependency of evaluate and must be
        # byte-identical between identical runs, or DVC re-runs every evaluate stage
        run.log_metrics({"seconds": seconds})
        if pr is not None:
            run.log_artifact(pr.with_suffix(".png"))
    log.info("float KNN on %s: accuracy %.4f at k=%d", dataset, out["accuracy"], params.knn.k)
    return out


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Float-embedding KNN baseline (train = database, test = queries).")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--sweep", type=Path, required=True, help="k-sweep CSV (DVC plot)")
    parser.add_argument(
        "--confusion", type=Path, required=True, help="confusion matrix PNG (JSON beside it)"
    )
    parser.add_argument(
        "--pr", type=Path, default=None, help="tie-aware PR curve CSV (DVC plot; PNG beside it)"
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="JSON of the test predictions at knn.k (evaluate's retention intervals read it)",
    )
    args = parser.parse_args(argv)
    run_knn(
        load(args),
        dataset=args.dataset,
        embeddings=args.embeddings,
        metrics=args.metrics,
        sweep=args.sweep,
        confusion_png_path=args.confusion,
        pr=args.pr,
        predictions=args.predictions,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
