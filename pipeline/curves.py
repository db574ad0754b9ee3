"""Stage ``curves``: accuracy and mAP against code length, one line per method (thesis-style).

Reads every evaluate metrics JSON of one dataset (``<method>-<bits>.json`` in ``--evaluate-dir``)
and the float baseline's (``--float-metrics``), writes one CSV row per (method, bits) (DVC plot)
and two PNGs: headline KNN score vs bits and mAP@all vs bits, the float baseline as a dashed line.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipeline.artifacts import ArtifactError, atomic_path, read_json, write_csv
from pipeline.common import base_parser, run_main

log = logging.getLogger(__name__)

NAME = re.compile(r"^(?P<method>.+)-(?P<bits>\d+)\.json$")
COLUMNS = ("balanced_accuracy", "accuracy", "macro_f1", "map_all", "map_at_1000", "map_at_10")


def collect(evaluate_dir: Path) -> list[dict[str, Any]]:
    """One row per ``<method>-<bits>.json`` in ``evaluate_dir``, sorted by method then bits."""
    rows = []
    for path in sorted(evaluate_dir.glob("*.json")):
        m = NAME.match(path.name)
        if not m:
            continue
        metrics = read_json(path)
        row: dict[str, Any] = {"method": m["method"], "bits": int(m["bits"])}
        row.update({c: metrics[c] for c in COLUMNS if c in metrics})
        rows.append(row)
    if not rows:
        raise ArtifactError(
            f"{evaluate_dir}: no <method>-<bits>.json evaluate metrics; run the evaluate stages first"
        )
    return sorted(rows, key=lambda r: (r["method"], r["bits"]))


def curve_png(path: Path, rows: list[dict[str, Any]], key: str, baseline: Any, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = [(r["bits"], r[key]) for r in rows if r["method"] == method and key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    if baseline is not None:
        ax.axhline(float(baseline), color="k", linestyle="--", label="float")
    ax.set(xlabel="bits", ylabel=key, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_curves(
    *, dataset: str, evaluate_dir: Path, float_metrics: Path, csv: Path, out_dir: Path
) -> list[dict[str, Any]]:
    rows = collect(evaluate_dir)
    base = read_json(float_metrics)
    write_csv(csv, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("balanced_accuracy", "map_all"):
        curve_png(
            out_dir / f"{key}_vs_bits.png", rows, key, base.get(key), f"{dataset}: {key} vs bits"
        )
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
    run_curves(
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
