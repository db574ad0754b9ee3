"""Utility check: hashed KNN vs the pipeline's own float KNN, every method x every bit length.

Runs the pipeline's library functions (no DVC), on real MedMNIST files:

    python bench/bench_utility.py --split val --features pixels tiny-random --out /tmp/val.md
    python bench/bench_utility.py --split test --features pixels --seeds 0 1 2

``--split val`` scores the queries of the validation split (the split that also picks each head's
epoch): use it for every experiment that chooses a default. ``--split test`` is for the final,
reported table only. Both use the train split as the KNN database, for the float baseline and the
codes alike. ``--jobs N`` trains cells in N processes (one torch thread each).

Feature sets (DINOv2 weights cannot be downloaded in this sandbox, so both are stand-ins):
* ``pixels``: the raw 28x28(x3) pixels, flattened, scaled to [0, 1] — passed through the
  *bring-your-own-embeddings* path of the extract stage (a user ``.npz``);
* ``tiny-random``: the extract stage with the seeded tiny random DINOv2 (``cls_mean`` pooling).
With real weights, pass ``--features dinov2`` (uses ``facebook/dinov2-base`` from the HF cache).

For each dataset the float baseline is :func:`retrieval.knn.knn_float` and every method is
trained by :func:`pipeline.train.train_one` with the params.yaml settings (plus ``--set``
overrides), its codes classified by :func:`retrieval.knn.knn_hamming` (same k, same tie-aware
voting) and scored by the metric table :mod:`retrieval.metrics` — balanced accuracy first.

The report opens with a block summary per (features, dataset) over the supervised cells (method x
length, seed means): mean balanced accuracy, cells under 0.98 x float balanced and plain
accuracy, and methods whose 48-bit figure is below their 12-bit one by more than one image. Then
come the per-method summary and the per-cell table. ``--merge`` rebuilds all of it from ``--json``
files, and also writes ``--out`` (required).

Single-label cells also get the 95 % interval of each retention over the query images
(:mod:`retrieval.uncertainty`: paired with the float KNN, class-stratified, seeds averaged per
resample), the count of cells short of 0.98 beyond that noise, and per block the retention of the
mean over its supervised cells with its interval. A second block table says what a per-cell bar
can certify on these queries with these seeds (:func:`certify_table`): the spread of the cells
beside the training noise of one cell, the probability that every cell clears 0.98 if every true
retention were 1.00, the true retention needed for that, and the same for the 48 - 12 target.
For that, ``--json`` files keep every query's prediction and the true labels: they are per-image
data, keep them out of the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even beside another editable install

import torch  # noqa: E402

from hashers import registry  # noqa: E402
from hashers.base import HashingError  # noqa: E402
from pipeline.artifacts import load_embeddings  # noqa: E402
from pipeline.common import parse_overrides  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.extract import extract_dataset  # noqa: E402
from pipeline.train import encode_splits, train_one  # noqa: E402
from retrieval.knn import knn_float, knn_hamming  # noqa: E402
from retrieval.metrics import CLASSIFICATION_METRICS, HEADLINE, classification_metrics  # noqa: E402
from retrieval.uncertainty import (  # noqa: E402
    RetentionInterval,
    bootstrap_retentions,
    clearing_retentions,
    retention_draws,
    seed_variances,
)

log = logging.getLogger("bench_utility")


def pixel_embeddings(root: Path, flag: str, out: Path) -> Path:
    """Write the raw pixels of an official MedMNIST file as a user embeddings ``.npz``."""
    with np.load(root / f"{flag}.npz") as z:
        arrays = {}
        for split in ("train", "val", "test"):
            imgs = z[f"{split}_images"].astype(np.float32) / 255.0
            arrays[f"{split}_x"] = imgs.reshape(len(imgs), -1)
            arrays[f"{split}_y"] = z[f"{split}_labels"].astype(np.int64)
    np.savez(out, **arrays)
    return out


def embeddings_for(
    features: str, dataset: str, root: Path, tmp: Path, base: dict[str, Any]
) -> Path:
    out = tmp / f"{dataset}-{features}.safetensors"
    overrides = {**base, "data.root": str(root), "data.download": False, "data.datasets": [dataset]}
    if features == "pixels":
        src = pixel_embeddings(root, dataset, tmp / f"{dataset}-pixels.npz")
        overrides[f"data.sources.{dataset}"] = {"kind": "embeddings", "path": str(src)}
    elif features == "tiny-random":
        overrides.update(
            {
                "backbone.name": "tiny-random",
                "backbone.pooling": "cls_mean",
                "backbone.image_size": 112,
            }
        )
    elif features == "dinov2":
        overrides["backbone.name"] = "facebook/dinov2-base"
    else:
        raise SystemExit(f"--features {features!r}: use pixels, tiny-random or dinov2")
    params = load_params(REPO / "params.yaml", overrides)
    extract_dataset(params, dataset, out, progress=False)
    return out


METRICS = list(CLASSIFICATION_METRICS)  # balanced accuracy first
SHORT = {"balanced_accuracy": "bal. acc", "accuracy": "acc", "macro_f1": "macro-F1"}


def float_scores(path: Path, split: str, base: dict[str, Any]) -> dict[str, float]:
    emb = load_embeddings(path)
    knn = load_params(REPO / "params.yaml", base).knn
    pred = knn_float(emb.x[split], emb.x["train"], emb.y["train"], [knn.k], metric=knn.metric)
    out: dict[str, Any] = classification_metrics(emb.y[split], pred[knn.k])
    if emb.y[split].ndim == 1:  # per-query predictions, for the bootstrap of the retention
        out |= {"y": emb.y[split].tolist(), "pred": pred[knn.k].tolist()}
    return out


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, bits, seed) head and score its codes on ``job["split"]``."""
    torch.set_num_threads(job["threads"])
    emb = load_embeddings(Path(job["path"]))
    params = load_params(REPO / "params.yaml", {**job["base"], "seed": job["seed"]})
    out = {k: job[k] for k in ("features", "dataset", "method", "bits", "seed")}
    try:
        head, result, _ = train_one(
            params,
            dataset=job["dataset"],
            method_name=job["method"],
            bits=job["bits"],
            emb=emb,
            progress=False,
        )
    except HashingError as err:  # e.g. ITQ/PCA with bits > embedding dim; a bug still raises
        return {**out, "error": str(err)[:60]}
    codes = encode_splits(head, emb)
    split, k = job["split"], params.knn.k
    pred = knn_hamming(codes[split], codes["train"], job["bits"], emb.y["train"], [k])[k]
    return {
        **out,
        **classification_metrics(emb.y[split], pred),
        "distinct_codes": len(np.unique(codes[split], axis=0)),
        **({"pred": pred.tolist()} if pred.ndim == 1 else {}),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_balanced_accuracy": result.summary()["best_val_balanced_accuracy"],
    }


def one_image(y: np.ndarray) -> float:
    """Largest change of balanced accuracy that one query image can make: ``1 / (C · n_min)``."""
    if y.ndim == 2:
        return 1.0 / len(y)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return 1.0 / (len(counts) * counts.min())


def report(
    results: list[dict[str, Any]],
    floats: dict[tuple[str, str], dict[str, Any]],
    args: argparse.Namespace,
    *,
    complete: bool = True,
) -> list[str]:
    """Markdown: per cell the mean over seeds of every metric with its retention, then a summary.
    The block intervals (one bootstrap over every cell of a block) are left out of the partial
    reports written while a run goes on (``complete=False``)."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["features"], r["dataset"], r["method"], r["bits"]), []).append(r)
    lines = [
        "| features | dataset | method | bits | "
        + " | ".join(f"{SHORT[m]} (retention)" for m in METRICS)
        + f" | {SHORT[HEADLINE]} retention, 95% CI | acc retention, 95% CI | distinct codes |",
        "|---|---|---|---|" + "---|" * (len(METRICS) + 3),
    ]
    summary = [
        "| features | dataset | method | "
        + " | ".join(f"min ret. {SHORT[m]}" for m in METRICS)
        + f" | {SHORT[HEADLINE]} 48 - 12 bits (images, ± 1 SE) | per seed "
        + f"| mean {SHORT[HEADLINE]} retention over lengths (95% CI) |",
        "|---|---|---|" + "---|" * (len(METRICS) + 3),
    ]
    means: dict[tuple, dict[str, float]] = {}
    cis: dict[tuple, dict[str, RetentionInterval]] = {}  # cells with per-query predictions
    # features -> SD over seeds of the 48 - 12 difference (images), supervised methods
    spreads: dict[str, list[float]] = {}
    n_seeds: dict[str, list[int]] = {}  # features -> seeds behind each of those differences
    for key, rs in cells.items():
        f = floats[key[:2]]
        ok = [r for r in rs if "error" not in r]
        kind = "" if registry.get(key[2]).supervised else " (unsup.)"
        if not ok:
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]}{kind} | {key[3]} | n/a: {rs[0]['error']} |"
            )
            continue
        m = {name: float(np.mean([r[name] for r in ok])) for name in METRICS}
        means[key] = m
        parts = [f"{m[n]:.3f} ({100 * m[n] / f[n]:.1f}%)" for n in METRICS]
        dc = np.mean([r["distinct_codes"] for r in ok])
        ci = query_intervals(ok, f)
        if ci:
            cis[key] = ci
        shown = [
            f"{100 * ci[n].low:.1f}–{100 * ci[n].high:.1f}%" if ci else "–" for n in BOOTSTRAPPED
        ]
        lines.append(
            f"| {key[0]} (d={f['dim']}) | {key[1]} | {key[2]}{kind} | {key[3]} | "
            + " | ".join(parts + shown)
            + f" | {dc:.0f} |"
        )
    for feat, ds, method in dict.fromkeys(k[:3] for k in means):
        f = floats[(feat, ds)]
        rows = {
            b: means[(feat, ds, method, b)] for b in args.bits if (feat, ds, method, b) in means
        }
        mins = [min(r[n] / f[n] for r in rows.values()) for n in METRICS]
        gap, per_seed = "–", "–"
        if 12 in rows and 48 in rows:
            gap = f"{(rows[48][HEADLINE] - rows[12][HEADLINE]) / f['one_image']:+.1f}"
            # the same difference seed by seed: its spread is the resolution of the mean
            diffs = seed_diffs(cells[(feat, ds, method, 12)], cells[(feat, ds, method, 48)], f)
            per_seed = " / ".join(f"{d:+.1f}" for d in diffs)
            if len(diffs) > 1:
                gap += f" ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.1f}"
                if registry.get(method).supervised:
                    spreads.setdefault(feat, []).append(float(np.std(diffs, ddof=1)))
                    n_seeds.setdefault(feat, []).append(len(diffs))
        kind = "" if registry.get(method).supervised else " (unsup.)"
        over = None
        if complete:  # the method's mean over its lengths and seeds, one bootstrap
            rows_m = [r for b in args.bits for r in cells.get((feat, ds, method, b), [])]
            over = pooled_interval(rows_m, floats[(feat, ds)])
        summary.append(
            f"| {feat} | {ds} | {method}{kind} | "
            + " | ".join(f"{100 * v:.1f}%" for v in mins)
            + f" | {gap} | {per_seed} | "
            + (
                "–"
                if not over
                else f"{over[HEADLINE].point:.3f} ({over[HEADLINE].low:.3f}–"
                f"{over[HEADLINE].high:.3f})"
            )
            + " |"
        )
    pooled = {
        fd: block_interval([r for k, rs in cells.items() if k[:2] == fd for r in rs], f)
        for fd, f in floats.items()
        if complete
    }
    blocks = block_summary(means, floats, cis, pooled)
    certify = certify_table(cells, floats) if complete else []
    floats_md = [
        f"- float KNN {feat}/{ds} (d={f['dim']}): "
        + ", ".join(f"{SHORT[n]} {f[n]:.3f}" for n in METRICS)
        + f"; one {args.split} image moves {SHORT[HEADLINE]} by at most {f['one_image']:.4f}"
        for (feat, ds), f in floats.items()
    ]
    resolution = [
        f"- {feat}: the 48 - 12 difference spreads by a median SD of {np.median(sd):.1f} images "
        f"over seeds (supervised methods), so a mean of {np.median(n_seeds[feat]):.0f} seeds "
        f"resolves about ±{np.median(sd) / np.sqrt(np.median(n_seeds[feat])):.1f} images (1 SE)"
        for feat, sd in spreads.items()
    ]
    for fd in floats:  # how much a single cell's retention can resolve on this query set
        widths = [
            ci[HEADLINE].high - ci[HEADLINE].low
            for k, ci in cis.items()
            if k[:2] == fd and registry.get(k[2]).supervised
        ]
        if widths:
            resolution.append(
                f"- {fd[0]}/{fd[1]}: the 95% interval of a supervised cell's {SHORT[HEADLINE]} "
                f"retention is {np.median(widths):.3f} wide (median; {min(widths):.3f}–"
                f"{max(widths):.3f})"
            )
    return [*floats_md, "", *blocks, "", *certify, "", *summary, "", *resolution, "", *lines]


BOOTSTRAPPED = ("balanced_accuracy", "accuracy")  # retention intervals in the per-cell table


_INTERVALS: dict[tuple, dict[str, RetentionInterval] | None] = {}  # the report is rebuilt per cell


def query_intervals(
    ok: list[dict[str, Any]], f: dict[str, Any]
) -> dict[str, RetentionInterval] | None:
    """Retention intervals of one cell over the query images (:func:`pooled_interval` of its
    seeds), or None where predictions were not kept; cached, since the report is rebuilt after
    every finished cell."""
    key = tuple((r["features"], r["dataset"], r["method"], r["bits"], r["seed"]) for r in ok)
    if key not in _INTERVALS:
        _INTERVALS[key] = pooled_interval(ok, f)
    return _INTERVALS[key]


def beyond(
    cells: dict[tuple, Any], cis: dict[tuple, dict[str, RetentionInterval]], metric: str
) -> str:
    """`` (s / a)``: cells whose whole interval is under 0.98 (short beyond the query set's
    noise) and over it (above beyond it); empty unless every cell has an interval."""
    got = [cis[k][metric] for k in cells if k in cis]
    if len(got) < len(cells):
        return ""
    short = sum(ci.verdict() == "short" for ci in got)
    return f" ({short} / {sum(ci.low >= ci.threshold for ci in got)})"


def block_interval(
    rows: list[dict[str, Any]], f: dict[str, Any]
) -> dict[str, RetentionInterval] | None:
    """The retention of a block's mean over its supervised cells (every seed of every method and
    length), with its query-bootstrap interval (:func:`pooled_interval`)."""
    return pooled_interval([r for r in rows if registry.get(r["method"]).supervised], f)


def pooled_interval(
    rows: list[dict[str, Any]], f: dict[str, Any]
) -> dict[str, RetentionInterval] | None:
    """The retention of the mean over ``rows`` (heads scored on the same queries), with its
    query-bootstrap interval: the float score is common to the rows, so the ratio of the mean is
    the mean of the ratios, and stacking every row's predictions in one bootstrap gives it on
    shared resamples."""
    ok = [r for r in rows if "error" not in r]
    if not ok or "pred" not in f or any("pred" not in r for r in ok):
        return None
    codes = np.asarray([r["pred"] for r in ok])
    return bootstrap_retentions(
        np.asarray(f["y"]), np.asarray(f["pred"]), codes, metrics=BOOTSTRAPPED
    )


def seed_diffs(
    rows12: list[dict[str, Any]], rows48: list[dict[str, Any]], f: dict[str, Any]
) -> list[float]:
    """The 48 - 12 bits difference of the headline metric, seed by seed (seeds run at both
    lengths), in images of the smallest class."""
    s12 = {r["seed"]: r[HEADLINE] for r in rows12 if "error" not in r}
    s48 = {r["seed"]: r[HEADLINE] for r in rows48 if "error" not in r}
    return [(s48[s] - s12[s]) / f["one_image"] for s in sorted(set(s12) & set(s48))]


def clearing(
    sup: dict[tuple, list[dict[str, Any]]],
    f: dict[str, Any],
    drawn: list[tuple[float, np.ndarray]],
    metric: str,
    bar: float,
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """For the cells ``sup`` of one block and their joint draws of ``metric`` (``drawn``, from
    :func:`retention_draws`): their retentions (seed means), the training noise of one cell (the
    block's pooled SD over seeds / sqrt(seeds)), the part of it that shifts every query alike
    (:func:`seed_variances`, pooled the same way), and the common true retention each joint
    resample needs for every cell to clear ``bar`` (:func:`clearing_retentions` with query noise
    and that shift: the bootstrap over the queries already resamples the rest, seeds that get
    different queries right)."""
    per_seed = [np.array([r[metric] for r in rs]) / f[metric] for rs in sup.values()]
    n_seeds = int(np.median([len(v) for v in per_seed]))
    seed_se = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in per_seed if len(v) > 1])))
    seed_se /= np.sqrt(n_seeds)
    y, fpred = np.asarray(f["y"]), np.asarray(f["pred"])
    shifts = [
        seed_variances(y, fpred, np.asarray([r["pred"] for r in rs]), metrics=(metric,))[metric][1]
        for rs in sup.values()
        if len(rs) > 1
    ]
    shift_se = float(np.sqrt(max(0.0, float(np.mean(shifts))) / n_seeds))
    points = np.array([pt for pt, _ in drawn])
    ratios = np.stack([d for _, d in drawn])
    needed = clearing_retentions(points, ratios, threshold=bar, seed_se=shift_se)
    return points, seed_se, shift_se, needed


def certify_table(
    cells: dict[tuple, list[dict[str, Any]]],
    floats: dict[tuple[str, str], dict[str, Any]],
    *,
    bar: float = 0.98,
    probs: tuple[float, ...] = (0.5, 0.8),
) -> list[str]:
    """Per block and metric (balanced, plain accuracy): what a per-cell bar can certify on this
    query set with these seeds.

    Over the supervised cells of a block (retentions of seed means): the spread of the cells (SD
    of their retentions) beside the training noise of one cell (:func:`clearing`): when they are
    alike, the cells differ by seed noise, not by method or length. Then, with query noise (joint
    bootstrap) and the part of that training noise that shifts every query alike (the rest, seeds
    getting different queries right, is in the bootstrap already): the probability that every cell's point estimate clears
    ``bar`` if every cell's true retention were 1.00, and the common true retention needed for
    ``probs``. And, on the balanced-accuracy row, the 48 - 12 target (no method's 48-bit figure
    below its 12-bit one by more than one image), from the seed spread of the differences alone
    (query noise left out, so optimistic): the probability that no pair falls below it if every
    true difference were 0, and the true lead of 48 bits (in images) needed for ``probs[-1]``.
    Empty without per-query predictions or with fewer than 2 seeds."""
    normal = NormalDist()
    out = [
        "| features | dataset | metric | cells | SD of cell retentions | training noise of a cell "
        "(1 SE) | of it a shift of every query (1 SE) "
        f"| P(every cell >= {bar}) at true 1.00 | "
        + " | ".join(f"true retention for P = {p:.0%}" for p in probs)
        + " | 48 - 12 pairs | P(no pair < -1 image) at true 0 "
        f"| true lead of 48 bits for P = {probs[-1]:.0%} (images) |",
        "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(probs) + "---:|---:|---:|",
    ]
    for fd, f in floats.items():
        sup = {
            k: [r for r in rs if "error" not in r]
            for k, rs in cells.items()
            if k[:2] == fd and registry.get(k[2]).supervised
        }
        sup = {k: rs for k, rs in sup.items() if rs}
        if (
            not sup
            or "pred" not in f
            or any("pred" not in r for rs in sup.values() for r in rs)
            or np.median([len(rs) for rs in sup.values()]) < 2
        ):
            continue
        diffs = []  # the 48 - 12 difference per method and seed, in images
        for method in dict.fromkeys(k[2] for k in sup):
            a, b = sup.get((*fd, method, 12)), sup.get((*fd, method, 48))
            if a and b and len(d := seed_diffs(a, b, f)) > 1:
                diffs.append(d)
        y, fpred = np.asarray(f["y"]), np.asarray(f["pred"])
        drawn = [  # every cell's resamples once, for both metrics
            retention_draws(y, fpred, np.asarray([r["pred"] for r in rs]), metrics=BOOTSTRAPPED)
            for rs in sup.values()
        ]
        for metric in BOOTSTRAPPED:
            points, seed_se, shift_se, needed = clearing(
                sup, f, [d[metric] for d in drawn], metric, bar
            )
            pair_cells = "– | – | –"
            if diffs and metric == HEADLINE:
                n = np.median([len(d) for d in diffs])
                se = float(np.sqrt(np.mean([np.var(d, ddof=1) for d in diffs])) / np.sqrt(n))
                m = len(diffs)
                lead = se * normal.inv_cdf(probs[-1] ** (1.0 / m)) - 1.0
                pair_cells = f"{m} | {normal.cdf(1.0 / se) ** m:.3f} | {lead:+.1f}"
            out.append(
                f"| {fd[0]} | {fd[1]} | {SHORT[metric]} | {len(sup)} | "
                f"{np.std(points, ddof=1):.3f} | {seed_se:.3f} | {shift_se:.3f} | "
                f"{np.mean(needed <= 1.0):.3f} | "
                + " | ".join(f"{np.quantile(needed, p):.3f}" for p in probs)
                + f" | {pair_cells} |"
            )
    return out if len(out) > 2 else []


def block_summary(
    means: dict[tuple, dict[str, float]],
    floats: dict[tuple[str, str], dict[str, Any]],
    cis: dict[tuple, dict[str, RetentionInterval]] | None = None,
    pooled: dict[tuple[str, str], dict[str, RetentionInterval] | None] | None = None,
) -> list[str]:
    """Per (features, dataset), over the supervised cells (method x bits, seed means): the mean
    balanced accuracy, the cells under 0.98 x float balanced and plain accuracy — and, where the
    per-query predictions were kept, how many of those are under it beyond the noise of the query
    set (the whole 95 % bootstrap interval under 0.98) — and the methods whose 48-bit balanced
    accuracy is below their 12-bit one by more than one image; with predictions, the retention of
    the block's mean balanced and plain accuracy and its 95 % interval (:func:`block_interval`)."""
    cis, pooled = cis or {}, pooled or {}
    out = [
        f"| features | dataset | supervised cells | mean {SHORT[HEADLINE]} | cells {SHORT[HEADLINE]} "
        "< 0.98 float (whole interval under / over 0.98) | cells acc < 0.98 float (under / over) "
        "| methods 48 < 12 bits by > 1 image | block retention bal. acc (95% CI) "
        "| block retention acc (95% CI) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fd, f in floats.items():
        sup = {k: m for k, m in means.items() if k[:2] == fd and registry.get(k[2]).supervised}
        if not sup:
            continue
        low_bal = sum(m[HEADLINE] < 0.98 * f[HEADLINE] for m in sup.values())
        low_acc = sum(m["accuracy"] < 0.98 * f["accuracy"] for m in sup.values())
        methods = dict.fromkeys(k[2] for k in sup)
        pairs = [m for m in methods if (*fd, m, 12) in sup and (*fd, m, 48) in sup]
        short = sum(
            sup[(*fd, m, 48)][HEADLINE] - sup[(*fd, m, 12)][HEADLINE] < -f["one_image"]
            for m in pairs
        )
        mean = np.mean([m[HEADLINE] for m in sup.values()])
        out.append(
            f"| {fd[0]} | {fd[1]} | {len(sup)} | {mean:.3f} | {low_bal}{beyond(sup, cis, HEADLINE)} "
            f"| {low_acc}{beyond(sup, cis, 'accuracy')} | {short} of {len(pairs)} | "
            + " | ".join(
                "–"
                if not pooled.get(fd)
                else f"{pooled[fd][n].point:.3f} ({pooled[fd][n].low:.3f}–{pooled[fd][n].high:.3f})"
                for n in BOOTSTRAPPED
            )
            + " |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--features", nargs="+", default=["pixels"])
    ap.add_argument("--methods", nargs="+", default=["all"])
    ap.add_argument(
        "--bits",
        nargs="+",
        type=int,
        default=None,
        help="bit lengths (default 12 24 36 48; with --merge: only these of the merged cells, "
        "default all of them)",
    )
    ap.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="head seeds averaged per cell"
    )
    ap.add_argument(
        "--split",
        choices=["val", "test"],
        required=True,
        help="queries to score: val for every experiment that picks a default, test for the report",
    )
    ap.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes")
    ap.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the results file (required: a default overwrote the curated bench/RESULTS-*.md)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every cell's numbers here")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for every run, e.g. --set methods.dsh.balance_pairs=false",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="train nothing: rebuild the report from --json files of earlier runs (a later file's "
        "cell replaces an earlier one with the same features, dataset, method, bits and seed)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = registry.names() if args.methods == ["all"] else args.methods
    if args.merge:
        merge_runs(args, methods)
        return
    args.bits = args.bits or [12, 24, 36, 48]
    base = {"tracking.enabled": False, **parse_overrides(args.overrides)}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        floats: dict[tuple[str, str], dict[str, Any]] = {}
        paths: dict[tuple[str, str], str] = {}
        for features in args.features:
            for dataset in args.datasets:
                path = embeddings_for(features, dataset, args.root, tmp, base)
                emb = load_embeddings(path)
                floats[(features, dataset)] = {
                    **float_scores(path, args.split, base),
                    "dim": emb.dim,
                    "one_image": one_image(emb.y[args.split]),
                }
                paths[(features, dataset)] = str(path)
        # method-major order: a stopped run has whole methods (every dataset and length) done
        jobs = [
            {
                "features": features,
                "dataset": dataset,
                "path": path,
                "method": method,
                "bits": bits,
                "seed": seed,
                "split": args.split,
                "base": base,
                "threads": 1 if args.jobs > 1 else torch.get_num_threads(),
            }
            for method in methods
            for (features, dataset), path in paths.items()
            for bits in args.bits
            for seed in args.seeds
        ]
        results: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            if args.jobs > 1:
                pool = stack.enter_context(multiprocessing.get_context("fork").Pool(args.jobs))
                cells = pool.imap(run_cell, jobs)
            else:
                cells = map(run_cell, jobs)
            for r in tqdm(cells, total=len(jobs), desc="cells", mininterval=30):
                results.append(r)
                write_outputs(args, results, floats, methods, t_start, len(jobs))
    print(args.out.read_text())


def merge_runs(args: argparse.Namespace, methods: list[str]) -> None:
    """Rebuild the report from the ``--json`` files of earlier runs of the same split."""
    floats: dict[tuple[str, str], dict[str, Any]] = {}
    cells: dict[tuple, dict[str, Any]] = {}
    settings: tuple[Path, list[str]] | None = None  # the first file and its --set overrides
    origin: dict[tuple[str, str], Path] = {}  # the file each block's float KNN came from
    for path in args.merge:
        data = json.loads(path.read_text())
        # files written before the split was recorded hold none: their split is --split's
        split = data.get("split", args.split)
        if split != args.split:
            raise SystemExit(
                f"--merge {path}: its cells were scored on the {split} split, not the "
                f"{args.split} split of --split; merge runs of one split (--split {split})"
            )
        overrides = list(data.get("overrides", []))
        if settings is None:
            settings = (path, overrides)
        elif parse_overrides(overrides) != parse_overrides(settings[1]):
            raise SystemExit(
                f"--merge: {settings[0]} was run with --set {settings[1]} but {path} with "
                f"--set {overrides}; merge only runs of the same settings"
            )
        for key, f in ((tuple(k.split("/")), v) for k, v in data["floats"].items()):
            prev = floats.get(key)
            common = [n for n in f if prev is not None and n in prev]
            if prev is not None and any(prev[n] != f[n] for n in common):
                raise SystemExit(
                    f"--merge: the float KNN of {'/'.join(key)} differs between "
                    f"{origin[key]} and {path} ({SHORT[HEADLINE]} {prev.get(HEADLINE)} vs "
                    f"{f.get(HEADLINE)}): other data, split or KNN settings; merge only runs of "
                    "the same features and queries"
                )
            floats[key], origin[key] = f, path
        for c in data["cells"]:
            cells[tuple(c[k] for k in ("features", "dataset", "method", "bits", "seed"))] = c
    if settings is not None:
        if args.overrides and parse_overrides(args.overrides) != parse_overrides(settings[1]):
            raise SystemExit(
                f"--merge trains nothing, so --set {args.overrides} changes nothing: the merged "
                f"runs used --set {settings[1]}; drop --set"
            )
        args.overrides = settings[1]  # the footer's k and overrides: those of the merged runs
    results = [
        c
        for c in cells.values()
        if c["method"] in methods and (args.bits is None or c["bits"] in args.bits)
    ]
    if args.bits is None:  # the summary's lengths: those merged
        args.bits = sorted({c["bits"] for c in results})
    args.features = list(dict.fromkeys(c["features"] for c in results))
    args.datasets = list(dict.fromkeys(c["dataset"] for c in results))
    args.seeds = sorted({c["seed"] for c in results})  # the footer's seeds: those merged
    write_outputs(args, results, floats, methods, time.perf_counter(), len(results))
    print(args.out.read_text())


def write_outputs(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    floats: dict[tuple[str, str], dict[str, Any]],
    methods: list[str],
    t_start: float,
    n_jobs: int,
) -> None:
    """(Re)write the report after every finished cell, so a stopped run keeps what it measured."""
    results = sorted(
        results,
        key=lambda r: (
            args.features.index(r["features"]),
            args.datasets.index(r["dataset"]),
            methods.index(r["method"]),
            r["bits"],
            r["seed"],
        ),
    )
    total = time.perf_counter() - t_start
    partial = "" if len(results) == n_jobs else f" PARTIAL: {len(results)} of {n_jobs} cells."
    base = {"tracking.enabled": False, **parse_overrides(args.overrides)}
    k = load_params(REPO / "params.yaml", base).knn.k  # the k of the run (--set knn.k=...)
    text = (
        "\n".join(report(results, floats, args, complete=len(results) == n_jobs))
        + f"\n\nHamming KNN (k={k}, database = train codes) on the **{args.split}** split, mean over "
        + f"head seeds {args.seeds}; (x%) = retention, the share of the float-KNN value of the same "
        + "features and metric. Summary: the lowest retention over the bit lengths, and the 48-bit "
        + f"minus 12-bit {SHORT[HEADLINE]} in units of one {args.split} image of the smallest class. "
        + (
            f"Merged from {', '.join(p.name for p in args.merge)}.\n"
            if args.merge
            else f"Total {total:.0f} s, {args.jobs} process(es).{partial}\n"
        )
        + (f"Overrides: {args.overrides}.\n" if args.overrides else "")
    )
    args.out.write_text(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "floats": {"/".join(k): v for k, v in floats.items()},
                    "cells": results,
                    "overrides": args.overrides,
                    "split": args.split,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
