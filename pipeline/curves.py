"""Stage ``curves``: accuracy and mAP against code length, one line per method (thesis-style).

Reads the evaluate metrics JSON (``<method>-<bits>.json`` in ``--evaluate-dir``) of every head the
params ask for (``train.methods`` x ``train.bits``, as the report does: never by globbing, so a
head dropped from the params leaves the plot) and the float baseline's (``--float-metrics``),
writes one CSV row per (method, bits) (DVC plot)
and three PNGs: headline KNN score vs bits and mAP@all vs bits, the float baseline as a dashed
line, and the retention of the float KNN's balanced accuracy vs bits with the bootstrap interval
evaluate wrote (``retention_balanced_accuracy_low/_high``) as error bars where there is one.
Every evaluate file must divide by the float KNN run of ``--float-metrics`` (same ``k`` and float
accuracy), as the report requires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts import (
    ArtifactError,
    atomic_outputs,
    atomic_path,
    check_float_knn,
    check_metrics_fingerprint,
    check_writable,
    read_json,
    remove_stale,
    write_csv,
)
from pipeline.common import base_parser, load, run_main

log = logging.getLogger(__name__)

COLUMNS = ("balanced_accuracy", "accuracy", "macro_f1", "map_all", "map_at_1000", "map_at_10")
COLUMNS += (
    "retention_balanced_accuracy",
    "retention_balanced_accuracy_low",
    "retention_balanced_accuracy_high",
)
RETENTION = "retention_balanced_accuracy"
#: the key every evaluate file holds (the plots' headline): a file without it is not one
REQUIRED = "balanced_accuracy"


def collect(
    evaluate_dir: Path,
    methods: Sequence[str],
    bits: Sequence[int],
    *,
    reference: Mapping[str, Any],
    reference_path: Path,
) -> list[dict[str, Any]]:
    """One row per head ``<method>-<bits>.json`` in ``evaluate_dir``, sorted by method then bits;
    a missing file is an error naming the evaluate stage to run, and every file must come from
    the embeddings of the float baseline ``reference`` (read from ``reference_path``)."""
    rows = []
    missing = []
    for method in methods:
        for b in bits:
            path = evaluate_dir / f"{method}-{b}.json"
            if not path.is_file():
                missing.append(path.name)
                continue
            metrics = read_json(path)
            if REQUIRED not in metrics:  # e.g. --evaluate-dir at the train stage's metrics
                raise ArtifactError(
                    f"{path}: no {REQUIRED}, so not an evaluate stage's metrics; pass "
                    "--evaluate-dir metrics/evaluate/<dataset>, or re-run its evaluate stage "
                    "(dvc repro)"
                )
            check_metrics_fingerprint(
                metrics.get("embeddings_fingerprint"),
                reference,
                recorded_in=path,
                reference_path=reference_path,
            )
            check_float_knn(metrics, path, reference, reference_path)
            row: dict[str, Any] = {"method": method, "bits": int(b)}
            row.update({c: metrics[c] for c in COLUMNS if c in metrics})
            rows.append(row)
    if missing:
        raise ArtifactError(
            f"{evaluate_dir}: no evaluate metrics for {', '.join(missing)} (train.methods x "
            "train.bits); run their evaluate stages first (dvc repro)"
        )
    present = [c for c in COLUMNS if any(c in r for r in rows)]  # one header for every row
    rows = [
        {"method": r["method"], "bits": r["bits"], **{c: r.get(c) for c in present}} for r in rows
    ]
    return sorted(rows, key=lambda r: (r["method"], r["bits"]))


def curve_png(path: Path, rows: list[dict[str, Any]], key: str, baseline: Any, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = [r for r in rows if r["method"] == method and r.get(key) is not None]
        if not pts:
            continue
        x, y = [r["bits"] for r in pts], [r[key] for r in pts]
        (line,) = ax.plot(x, y, marker="o", label=method)
        low, high = (f"{key}_low", f"{key}_high")
        # bars on every point that has an interval (a point without one no longer took the
        # bars off its whole line); a percentile interval need not hold its point (a narrow
        # knn.ci_level): the bar then spans the interval and the point
        bars = [r for r in pts if r.get(low) is not None and r.get(high) is not None]
        if bars:
            below = [max(r[key] - r[low], 0.0) for r in bars]
            above = [max(r[high] - r[key], 0.0) for r in bars]
            ax.errorbar(
                [r["bits"] for r in bars],
                [r[key] for r in bars],
                yerr=[below, above],
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
            )
    if baseline is not None:
        ax.axhline(float(baseline), color="k", linestyle="--", label="float")
    ax.set(xlabel="bits", ylabel=key)
    ax.set_title(title, fontsize=9, wrap=True)  # long titles were cut at the figure's edge
    ax.set_xticks(sorted({int(r["bits"]) for r in rows}))  # the code lengths, not 11.4 … 12.6
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_curves(
    *,
    dataset: str,
    evaluate_dir: Path,
    float_metrics: Path,
    csv: Path,
    out_dir: Path,
    methods: Sequence[str],
    bits: Sequence[int],
) -> list[dict[str, Any]]:
    """Rows of the heads ``methods`` x ``bits``; the CSV and the PNGs land together or not at all."""
    check_writable(csv, dirs=[out_dir])
    base = read_json(float_metrics)
    rows = collect(evaluate_dir, methods, bits, reference=base, reference_path=float_metrics)
    with atomic_outputs():
        write_csv(csv, rows)
        for key in ("balanced_accuracy", "map_all"):
            curve_png(
                out_dir / f"{key}_vs_bits.png",
                rows,
                key,
                base.get(key),
                f"{dataset}: {key} vs bits",
            )
        retention_png = [out_dir / "retention_vs_bits.png"]
        if any(r.get(RETENTION) is not None for r in rows):
            title = f"{dataset}: retention of float balanced accuracy\n(bars: test-query bootstrap)"
            curve_png(retention_png[0], rows, RETENTION, 1.0, title)
        else:
            retention_png = []
    remove_stale(out_dir, "retention_vs_bits.png", retention_png)  # of an earlier run
    log.info("%s: %d (method, bits) runs plotted", dataset, len(rows))
    return rows


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Accuracy and mAP against code length for every method of a dataset.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--evaluate-dir", type=Path, required=True)
    parser.add_argument("--float-metrics", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True, help="plot data (DVC plot)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    params = load(args)
    run_curves(
        methods=params.train.methods,
        bits=params.train.bits,
        dataset=args.dataset,
        evaluate_dir=args.evaluate_dir,
        float_metrics=args.float_metrics,
        csv=args.csv,
        out_dir=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
