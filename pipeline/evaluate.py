"""Stage ``evaluate``: KNN on Hamming codes (database = train codes, queries = test codes).

Uses the same k, k-sweep and tie-aware voting (:mod:`retrieval.knn`) as the float baseline, and reports
each metric's ratio to the float-KNN value (``retention_*``).

Inputs are checked before any work: the embeddings file must be the one the head was trained on
(same content fingerprint, :func:`pipeline.artifacts.check_head_embeddings`), the float-metrics
file must come from the same embeddings and k, and ``--dataset/--method/--bits`` (optional) must
match the head's ``config.json``, which is where they are read from otherwise.

A head trained with a finding withheld (``attack.withhold_label``, recorded in its ``config.json``)
is scored on every label column of the file, like the float baseline it is compared with: a
retention over the head's own columns would divide by a float number over other columns.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from pipeline.artifacts import (
    HEAD_CONFIG_KEYS,
    ArtifactError,
    EmbeddingsFile,
    check_head_embeddings,
    check_same_embeddings,
    check_writable,
    load_embeddings,
    load_head_codes,
    read_json,
    recorded_fingerprint,
    reported_fingerprint,
    write_json,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import KnnConfig, Params
from pipeline.knn import knn_outputs, pr_outputs, sweep_metrics, write_knn_outputs
from pipeline.retrieval_metrics import code_retrieval, read_pr_curve, write_pr_curve
from retrieval.knn import knn_hamming
from retrieval.metrics import (
    CLASSIFICATION_METRICS,
    classes_present,
    degenerate_release,
    retention,
)
from retrieval.uncertainty import BOOTSTRAP_METRICS, bootstrap_retentions

log = logging.getLogger(__name__)


def head_identity(
    head_config: dict[str, Any],
    head_dir: Path,
    *,
    dataset: str | None,
    method_name: str | None,
    bits: int | None,
) -> tuple[str, str, int]:
    """(dataset, method, bits) of the head, from its ``config.json``; a command-line value that
    disagrees is refused (it would file one head's numbers under another's name)."""
    try:
        stored = (
            str(head_config["dataset"]),
            str(head_config["method"]),
            int(head_config["head_spec"]["n_bits"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(
            f"{head_dir / 'config.json'}: malformed head config ({err!r} missing or invalid); "
            "re-run the train stage"
        ) from None
    for flag, given, have in zip(
        ("--dataset", "--method", "--bits"), (dataset, method_name, bits), stored, strict=True
    ):
        if given is not None and given != have:
            raise ArtifactError(
                f"{flag} {given}: the head in {head_dir} was trained with {flag[2:]}={have} "
                f"({head_dir / 'config.json'}); pass {flag} {have}, or the head of {given}"
            )
    return stored


def check_float_baseline(
    baseline: dict[str, Any], emb: EmbeddingsFile, params: Params, *, path: Path, embeddings: Path
) -> None:
    """The float-KNN metrics must come from the same embeddings, the same k and the same float
    metric (``knn.metric``), and hold a number for every score the retentions divide by."""
    check_same_embeddings(
        baseline.get("embeddings_fingerprint"), emb, embeddings_path=embeddings, recorded_in=path
    )
    fix = "re-run the knn stage (dvc repro)"
    k = baseline["k"]
    if not isinstance(k, int) or isinstance(k, bool):
        raise ArtifactError(f"{path}: k is {k!r}, not an integer; {fix}")
    for key in CLASSIFICATION_METRICS:
        value = baseline[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ArtifactError(f"{path}: {key} is {value!r}, not a score in [0, 1]; {fix}")
    space = baseline.get("metric_space")
    if space is not None and space != params.knn.metric:
        raise ArtifactError(
            f"{path}: the float KNN ran with knn.metric={space}, params say "
            f"knn.metric={params.knn.metric}; {fix}"
        )
    if k != params.knn.k:
        raise ArtifactError(
            f"{path}: float KNN used k={baseline['k']}, params say knn.k={params.knn.k}; re-run "
            "the knn stage (dvc repro)"
        )


def read_float_predictions(
    path: Path,
    emb: EmbeddingsFile,
    config: KnnConfig,
    *,
    embeddings: Path,
    baseline: dict[str, Any],
    float_metrics: Path,
) -> np.ndarray | None:
    """The knn stage's test predictions (``--predictions``), checked to come from the same
    embeddings and k, and to be the predictions behind the float metrics ``baseline`` (read from
    ``float_metrics``): their scores must be the ones it records, or the interval would be of
    another ratio than the retention beside it (e.g. predictions of a knn run at another
    ``knn.metric``); None for a multi-label set."""
    record = read_json(path, require=("k", "embeddings_fingerprint", "pred"))
    check_same_embeddings(
        record["embeddings_fingerprint"], emb, embeddings_path=embeddings, recorded_in=path
    )
    if record["k"] != config.k or type(record["k"]) is not int:  # "7" or true is no k
        raise ArtifactError(
            f"{path}: float KNN predictions at k={record['k']!r}, params say knn.k={config.k}; "
            "re-run the knn stage"
        )
    if record["pred"] is None:
        return None
    raw = record["pred"]
    # one JSON integer per test query: a number, a column of lists, 1e30 or 1.5 is no class id
    # (a bare number or 1e30 was a traceback; 1.5 was read as class 1)
    if not isinstance(raw, list) or not all(type(v) is int and 0 <= v < 2**63 for v in raw):
        raise ArtifactError(
            f"{path}: 'pred' is not a list of class ids (one non-negative integer per test "
            "query); re-run the knn stage"
        )
    pred = np.asarray(raw, dtype=np.int64).reshape(len(raw))
    if pred.shape != emb.y["test"].shape:
        raise ArtifactError(
            f"{path}: {len(pred)} predictions for {len(emb.y['test'])} test queries; re-run the "
            "knn stage"
        )
    for name in BOOTSTRAP_METRICS:  # the scores the intervals divide by
        got, want = CLASSIFICATION_METRICS[name].fn(emb.y["test"], pred), baseline[name]
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            raise ArtifactError(
                f"{path}: these float predictions score {name} {got:.6g} on the test queries, but "
                f"{float_metrics} records {want:.6g}: they come from another knn run (e.g. another "
                "knn.metric); re-run the knn stage with --predictions (dvc repro)"
            )
    return pred


def retention_intervals(
    y_true: np.ndarray, float_pred: np.ndarray, code_pred: np.ndarray, config: KnnConfig
) -> dict[str, float]:
    """``retention_<metric>_low`` / ``_high``: the bootstrap interval of each retention over the
    test queries (:func:`retrieval.uncertainty.bootstrap_retentions`, seed 0, so a re-run writes
    the same numbers)."""
    intervals = bootstrap_retentions(
        y_true, float_pred, code_pred, n_boot=config.ci_resamples, level=config.ci_level
    )
    out: dict[str, float] = {}
    for metric, ci in intervals.items():
        if np.isfinite(ci.low) and np.isfinite(ci.high):  # undefined where float scores 0
            out[f"retention_{metric}_low"] = ci.low
            out[f"retention_{metric}_high"] = ci.high
    return out


def hamming_knn(
    emb: EmbeddingsFile, codes: dict[str, np.ndarray], n_bits: int, ks: list[int]
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
    dataset: str | None,
    method_name: str | None,
    bits: int | None,
    embeddings: Path,
    head_dir: Path,
    float_metrics: Path,
    metrics: Path,
    sweep: Path,
    confusion_png_path: Path,
    pr: Path | None = None,
    float_pr: Path | None = None,
    latency: Path | None = None,
    float_predictions: Path | None = None,
) -> dict[str, Any]:
    """``pr``: tie-aware PR curve CSV + PNG (with the two-stage search's and, from ``float_pr``,
    the float baseline's curve in the PNG); ``latency``: a JSON of measured ms/query of
    Hamming-only, two-stage and float-only search (a separate file: timings are never
    byte-identical, and the metrics JSON is a dependency of later stages: curves, report, ...);
    ``float_predictions``: the knn stage's test predictions, for the retention intervals
    (``knn.ci_resamples``; single-label sets)."""
    outputs = (*pr_outputs(pr), *(() if latency is None else (latency,)))
    check_writable(*knn_outputs(metrics, sweep, confusion_png_path), *outputs)
    head_config = read_json(head_dir / "config.json", require=HEAD_CONFIG_KEYS)
    dataset, method_name, bits = head_identity(
        head_config, head_dir, dataset=dataset, method_name=method_name, bits=bits
    )
    emb = load_embeddings(embeddings, dataset=dataset)
    check_head_embeddings(head_config, emb, head_dir=head_dir, embeddings_path=embeddings)
    codes_path = head_dir / "codes.safetensors"
    codes, n_bits, codes_meta = load_head_codes(head_dir)
    check_same_embeddings(
        codes_meta.get("fingerprint"), emb, embeddings_path=embeddings, recorded_in=codes_path
    )
    if n_bits != bits:
        raise ArtifactError(
            f"{codes_path}: codes have {n_bits} bits, the head {bits}; the folder mixes files of "
            "two train runs: re-run its train stage"
        )
    baseline = read_json(float_metrics, require=("k", *CLASSIFICATION_METRICS))
    check_float_baseline(baseline, emb, params, path=float_metrics, embeddings=embeddings)
    params.knn.check_database(len(emb.y["train"]))
    float_curve = None if float_pr is None else read_pr_curve(float_pr)
    float_pred = (
        None
        if float_predictions is None or params.knn.ci_resamples == 0
        else read_float_predictions(
            float_predictions,
            emb,
            params.knn,
            embeddings=embeddings,
            baseline=baseline,
            float_metrics=float_metrics,
        )
    )
    ks = sorted({params.knn.k, *params.knn.k_sweep})
    name = tracking.head_run_name("evaluate", head_config, dataset, method_name, bits)
    tags = {
        # the ``embeddings`` tag the head's config records: a plain head's content fingerprint as
        # its train run's tag; a DP head's public one (as train_dp's); a release's own public one
        **tracking.head_tags(
            dataset, method_name, bits, emb, fingerprint=recorded_fingerprint(head_config)
        ),
        **tracking.defence_of(head_config)[2],
    }
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        run.log_params({"knn.k": params.knn.k, "bits": bits, "method": method_name})
        rows, preds = hamming_knn(emb, codes, n_bits, ks)
        at_k = next(r for r in rows if r["k"] == params.knn.k)
        # every float score a retention divides by: report, curves and release_curve check them
        # against the float KNN they show (artifacts.check_float_knn)
        extra: dict[str, Any] = {"bits": bits}
        extra.update({f"float_{m}": baseline[m] for m in CLASSIFICATION_METRICS})
        extra.update(retention(at_k, baseline))
        if float_pred is not None:
            extra.update(
                retention_intervals(emb.y["test"], float_pred, preds[params.knn.k], params.knn)
            )
        extra["distinct_test_codes"] = len(np.unique(codes["test"], axis=0))
        ranked = code_retrieval(params, emb, codes, n_bits, latency=latency is not None)
        extra.update(ranked.scalars)
        present = classes_present(emb.y["test"])  # what the queries hold, not the declared ids
        extra.update(degenerate_release(extra["distinct_test_codes"], preds[params.knn.k], present))
        if extra["degenerate_release"]:
            log.warning(
                "%s: degenerate release: %d distinct test codes for %d classes in the test split, "
                "predictions of %d class(es); its accuracy reflects the class prior, read its "
                "balanced accuracy",
                name,
                extra["distinct_test_codes"],
                present,
                extra["predicted_classes"],
            )
        # of the kind the head records: a DP head's or a release's metrics carry its public digest
        extra["embeddings_fingerprint"] = reported_fingerprint(emb, head_config)
        curves = {**ranked.curves, **({"float": float_curve} if float_curve else {})}

        def write_more() -> None:
            if pr is not None:
                write_pr_curve(pr, curves, title=f"{dataset}: {method_name} {bits}-bit PR")
            if latency is not None:
                write_json(latency, ranked.latency)

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
            title=f"{dataset}: {method_name} {bits}-bit Hamming KNN (k={params.knn.k})",
            write_more=write_more,
        )
        if ranked.latency:
            run.log_metrics({k: v for k, v in ranked.latency.items() if k.startswith("latency")})
        if pr is not None:
            run.log_artifact(pr.with_suffix(".png"))
    log.info(
        "%s: balanced accuracy %.4f = %.1f%% of float (accuracy %.4f = %.1f%%)",
        name,
        out["balanced_accuracy"],
        100 * out["retention_balanced_accuracy"],
        out["accuracy"],
        100 * out["retention_accuracy"],
    )
    return out


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Hamming-code KNN of one trained head, compared with the float baseline.")
    parser.add_argument("--dataset", help="default: the head's; refused if it differs")
    parser.add_argument("--method", help="default: the head's; refused if it differs")
    parser.add_argument("--bits", type=int, help="default: the head's; refused if it differs")
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
    parser.add_argument(
        "--pr", type=Path, default=None, help="tie-aware PR curve CSV (DVC plot; PNG beside it)"
    )
    parser.add_argument(
        "--float-pr", type=Path, default=None, help="the knn stage's PR CSV, drawn in the PNG"
    )
    parser.add_argument(
        "--latency", type=Path, default=None, help="JSON: ms/query of Hamming, two-stage, float"
    )
    parser.add_argument(
        "--float-predictions",
        type=Path,
        default=None,
        help="the knn stage's predictions JSON: adds retention intervals (knn.ci_resamples)",
    )
    args = parser.parse_args(argv)
    run_evaluate(
        load(args),
        dataset=args.dataset,
        method_name=args.method,
        bits=args.bits,
        embeddings=args.embeddings,
        head_dir=args.head,
        float_metrics=args.float_metrics,
        metrics=args.metrics,
        sweep=args.sweep,
        confusion_png_path=args.confusion,
        pr=args.pr,
        float_pr=args.float_pr,
        latency=args.latency,
        float_predictions=args.float_predictions,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
