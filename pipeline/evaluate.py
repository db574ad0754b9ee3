"""Stage ``evaluate``: KNN on Hamming codes (database = train codes, queries = test codes).

Uses the same k, k-sweep and tie-aware voting (:mod:`hashers.knn`) as the float baseline, and reports
each metric's ratio to the float-KNN value (``retention_*``). Refuses codes whose head was trained
on embeddings from another backbone than the embeddings file given here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from pipeline.artifacts import ArtifactError, Embeddings, load_codes, load_embeddings, read_json
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params
from pipeline.knn import sweep_metrics, write_knn_outputs
from pipeline.retrieval_metrics import code_retrieval_metrics
from retrieval.knn import knn_hamming

log = logging.getLogger(__name__)


def check_compatible(
    head_config: dict[str, Any], emb: Embeddings, codes_meta: dict[str, str], where: Path
) -> None:
    """The head, its codes and the embeddings must come from the same backbone and dataset split."""
    trained = head_config.get("embeddings", {})
    for key in ("backbone", "pooling", "dim"):
        want = str(trained.get(key))
        got = str(emb.dim if key == "dim" else emb.meta.get(key))
        if want != got:
            raise ArtifactError(
                f"{where}: the head was trained on embeddings with {key}={want!r} but the embeddings "
                f"file has {key}={got!r}; re-run the train stage on these embeddings (dvc repro) or "
                "point --embeddings at the file the head was trained on"
            )
    if codes_meta.get("backbone") != emb.backbone:
        raise ArtifactError(
            f"{where}: codes come from backbone {codes_meta.get('backbone')!r}, embeddings from {emb.backbone!r}"
        )


def hamming_knn(
    emb: Embeddings, codes: dict[str, np.ndarray], n_bits: int, ks: list[int]
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    for split in ("train", "test"):
        if len(codes[split]) != len(emb.y[split]):
            raise ArtifactError(
                f"codes hold {len(codes[split])} {split} items but the embeddings {len(emb.y[split])}; "
                "they come from different runs — re-run the train stage"
            )
    preds = knn_hamming(codes["test"], codes["train"], n_bits, emb.y["train"], ks)
    return sweep_metrics(emb.y["test"], preds, emb.n_classes), preds


def run_evaluate(
    params: Params,
    *,
    dataset: str,
    method: str,
    bits: int,
    embeddings: Path,
    head_dir: Path,
    float_metrics: Path,
    metrics: Path,
    sweep: Path,
    confusion_png_path: Path,
) -> dict[str, Any]:
    emb = load_embeddings(embeddings)
    head_config = read_json(head_dir / "config.json")
    codes, n_bits, codes_meta = load_codes(head_dir / "codes.safetensors")
    check_compatible(head_config, emb, codes_meta, head_dir)
    if n_bits != bits:
        raise ArtifactError(f"{head_dir}: codes have {n_bits} bits, --bits says {bits}")
    baseline = read_json(float_metrics)
    if int(baseline.get("k", -1)) != params.knn.k:
        raise ArtifactError(
            f"{float_metrics}: float KNN used k={baseline.get('k')}, params say k={params.knn.k}; re-run the knn stage"
        )
    ks = sorted({params.knn.k, *params.knn.k_sweep})
    name = f"evaluate@{dataset}-{method}-{bits}"
    with tracking.stage_run(
        params.tracking,
        name=name,
        tags={"dataset": dataset, "method": method, "bits": bits, "backbone": emb.backbone},
    ) as run:
        run.log_params({"knn.k": params.knn.k, "bits": bits, "method": method})
        rows, preds = hamming_knn(emb, codes, n_bits, ks)
        at_k = next(r for r in rows if r["k"] == params.knn.k)
        extra: dict[str, Any] = {"bits": bits, "float_accuracy": baseline["accuracy"]}
        for key in ("accuracy", "macro_f1", "balanced_accuracy"):
            extra[f"retention_{key}"] = at_k[key] / baseline[key] if baseline[key] > 0 else 0.0
        extra["distinct_test_codes"] = len(np.unique(codes["test"], axis=0))
        extra.update(code_retrieval_metrics(params, emb, codes, n_bits))
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
            title=f"{dataset}: {method} {bits}-bit Hamming KNN (k={params.knn.k})",
        )
    log.info(
        "%s: accuracy %.4f = %.1f%% of float",
        name,
        out["accuracy"],
        100 * out["retention_accuracy"],
    )
    return out


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Hamming-code KNN of one trained head, compared with the float baseline.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument(
        "--head", type=Path, required=True, help="the train stage's output directory"
    )
    parser.add_argument(
        "--float-metrics", type=Path, required=True, help="the knn stage's metrics JSON"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--confusion", type=Path, required=True)
    args = parser.parse_args(argv)
    run_evaluate(
        load(args),
        dataset=args.dataset,
        method=args.method,
        bits=args.bits,
        embeddings=args.embeddings,
        head_dir=args.head,
        float_metrics=args.float_metrics,
        metrics=args.metrics,
        sweep=args.sweep,
        confusion_png_path=args.confusion,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
