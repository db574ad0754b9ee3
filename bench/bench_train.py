"""Training benchmark: registered hashing methods x code lengths on synthetic embeddings.

Question it answers: does the full grid (every supervised method x 12/24/36/48 bits on 90,000 x 768
embeddings, PathMNIST-sized) train in under 30 minutes on a 2-core CPU, how much time and memory
does each method take, and is TCL cheaper than the triplet methods?

    python bench/bench_train.py --n 90000 --dim 768 --classes 9 --bits 12 24 36 48 \\
        --methods all --epochs 60 --out bench/RESULTS-train.md
    # quick calibration + extrapolation to the full grid:
    python bench/bench_train.py --n 9000 --dim 768 --epochs 3 --budget-check --out /tmp/b.md

Every (method, bits) run is a fresh subprocess (this script with ``--single``), so ``ru_maxrss`` is
that run's own peak RSS (synthetic data included; the table also shows the peak right after data
generation). A run that fails, times out or is killed is recorded with its error and the grid goes
on. Training settings come from ``params.yaml`` through the pipeline's own builders
(``pipeline.train.fit_config`` / ``head_spec``: the ``train:`` block, ``knn.k``, ``seed``); the flags
``--epochs --max-steps --batch-size --lr --patience --val-queries --device`` override their keys.
Method hyper-parameters are each method's ``methods:`` block (defaults where it has none).

Synthetic data (``pipeline.synthetic.latent_clusters``, shared with the tests): seeded Gaussian clusters, 9 classes with mild imbalance, whose class structure lives
in a 32-d latent subspace mapped into ``dim`` dimensions, plus isotropic noise, a non-zero mean (as
DINOv2 features have) and 5 % label noise, tuned so float KNN lands near 90 % test accuracy (close
to DINOv2 on PathMNIST). Timing does not depend on the values, only on the shapes and on how many
epochs early stopping lets a method run, which real data may change.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRIPLET_METHODS = (
    "dnnh",
    "dshgan",
)  # triplet ranking losses (DNNH, DSH-GAN); TCL is compared to them
FLOAT = "float"  # --single FLOAT: the float-embedding KNN baseline
BUDGET_MIN = 30.0


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# one run (child process)
# --------------------------------------------------------------------------------------------


# command-line flag -> params.yaml key it overrides (None: keep params.yaml's value)
PARAM_FLAGS = {
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "patience": "train.patience",
    "val_queries": "train.val_queries",
    "device": "train.device",
}


def load_bench_params(args: argparse.Namespace) -> Any:
    """``params.yaml`` with the flags given on the command line applied (``--max-steps 0``: no budget)."""
    from pipeline.config import load_params

    overrides = {
        key: getattr(args, flag)
        for flag, key in PARAM_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if overrides.get("train.max_steps") == 0:
        overrides["train.max_steps"] = None
    return load_params(args.params, overrides)


def fit_config(params: Any) -> Any:
    """The pipeline's own FitConfig builder, without progress bars."""
    from pipeline.train import fit_config as pipeline_fit_config

    return pipeline_fit_config(params, progress=False)


def load_data(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from pipeline.synthetic import latent_clusters

    data = latent_clusters(
        n_train=args.n,
        n_val=args.n_val,
        n_test=args.n_test,
        dim=args.dim,
        n_classes=args.classes,
        seed=args.data_seed,
    )
    if args.test_queries is not None and args.test_queries < args.n_test:
        x, y = data["test"]
        data["test"] = (x[: args.test_queries], y[: args.test_queries])
    return data


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    """Fit one method at one code length (or the float baseline); return the measurements."""
    import torch

    from hashers import registry
    from hashers.trainer import fit, peak_rss_mb
    from pipeline.artifacts import EmbeddingsFile
    from pipeline.train import embedding_set, head_spec
    from retrieval.codes import pack_bits
    from retrieval.knn import knn_float, knn_hamming
    from retrieval.metrics import classification_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    import sklearn.metrics  # noqa: F401 - imported lazily by the KNN metrics: keep it out of train_s

    params = load_bench_params(args)
    if args.single != FLOAT:
        registry.get(args.single)  # import the method's module before the clock starts
        torch.optim.AdamW(
            [torch.zeros(1, requires_grad=True)]
        )  # first optimizer imports torch._dynamo
    k = params.knn.k
    bits = args.bits[0]
    rec: dict[str, Any] = {"method": args.single, "bits": bits, "status": "ok"}
    rec["import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = load_data(args)
    rec["data_s"] = time.perf_counter() - t0
    rec["rss_data_mb"] = peak_rss_mb()
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    if args.single == FLOAT:
        t0 = time.perf_counter()
        pred = knn_float(xte, xtr, ytr, [k], metric=params.knn.metric)[k]
        rec["eval_s"] = time.perf_counter() - t0
        rec["test_accuracy"] = classification_metrics(yte, pred)["accuracy"]
        rec["peak_rss_mb"] = peak_rss_mb()
        return rec

    emb = EmbeddingsFile(
        x={s: x for s, (x, _) in data.items()},
        y={s: y for s, (_, y) in data.items()},
        meta={"n_classes": str(args.classes)},
    )
    sets = {s: embedding_set(emb, s) for s in emb.x}
    spec = head_spec(emb, params, bits)
    del data, emb
    cfg = fit_config(params)
    method = registry.build(args.single, spec, params.method_config(args.single), seed=params.seed)
    result = fit(method, sets["train"], sets["val"], config=cfg)
    rec.update(
        supervised=bool(method.supervised),
        trainable=bool(method.trainable),
        train_s=result.wall_time_s,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        val_accuracy=result.best_val_accuracy,
    )
    t0 = time.perf_counter()
    with torch.no_grad():
        db, q = pack_bits(method.encode(sets["train"].x)), pack_bits(method.encode(sets["test"].x))
    pred = knn_hamming(q, db, bits, ytr, [k])[k]
    rec["eval_s"] = time.perf_counter() - t0
    rec["test_accuracy"] = classification_metrics(yte, pred)["accuracy"]
    rec["peak_rss_mb"] = peak_rss_mb()
    rec["load_avg_1min"] = os.getloadavg()[0]  # other processes on the machine skew every timing
    return rec


# --------------------------------------------------------------------------------------------
# the grid (parent process)
# --------------------------------------------------------------------------------------------


CHILD_FLAGS = (
    "params", "n", "dim", "classes", "n_val", "n_test", "test_queries", "data_seed",
    "epochs", "max_steps", "batch_size", "lr", "patience", "val_queries", "device", "threads",
)  # fmt: skip
# every PARAM_FLAGS flag must reach the child: the report's FitConfig line (the parent's params)
# would otherwise name a setting the runs did not train with (``--max-steps`` once did)


def child_argv(args: argparse.Namespace, method: str, bits: int, result: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--single", method, "--bits", str(bits)]
    for name in CHILD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, "--result", str(result)]


def run_child(args: argparse.Namespace, method: str, bits: int) -> dict[str, Any]:
    base = {"method": method, "bits": bits}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        result = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                child_argv(args, method, bits, result),
                capture_output=True,
                text=True,
                timeout=args.timeout_s,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            return {
                **base,
                "status": "error",
                "error": f"timed out after {args.timeout_s} s",
                "wall_s": args.timeout_s,
            }
        wall = time.perf_counter() - t0
        if result.is_file():
            rec = json.loads(result.read_text())
        elif proc.returncode < 0:
            rec = {
                **base,
                "status": "error",
                "error": f"killed by signal {-proc.returncode} (out of memory?)",
            }
        else:
            tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            rec = {
                **base,
                "status": "error",
                "error": tail[-1] if tail else f"exit code {proc.returncode}",
            }
    rec["wall_s"] = wall
    return rec


def resolve_methods(selection: Sequence[str]) -> list[str]:
    from hashers import registry

    names = registry.names()
    if list(selection) in (["all"], ["supervised"], ["unsupervised"]):
        if selection[0] == "all":
            return names
        want = selection[0] == "supervised"
        return [n for n in names if registry.get(n).supervised == want]
    unknown = [m for m in selection if m not in names]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(names)}")
    return list(selection)


def mlp_flops(dim: int, hidden: Sequence[int], bits: int) -> float:
    widths = [dim, *hidden, bits]
    return float(sum(a * b for a, b in itertools.pairwise(widths)))


def budget_estimate(
    records: list[dict[str, Any]], args: argparse.Namespace, params: Any
) -> dict[str, Any]:
    """Extrapolate the measured per-epoch times to the full grid (worst case: no early stopping).

    Per supervised method: seconds per epoch (incl. the per-epoch val KNN) averaged over the measured
    bit lengths, scaled linearly by ``full_n / n`` and, when ``dim`` differs, by the MLP's
    multiply-add ratio (crude: the val KNN does not depend on ``dim``). Exact in its assumptions only
    when measured at the full ``dim``; methods whose setup is super-linear in ``n`` are
    under-estimated.
    """
    hidden = params.train.hidden_dims
    # epochs each full-size run may take: train.epochs capped by the max_steps budget at full_n
    full_epochs = args.full_epochs or fit_config(params).epoch_budget(args.full_n)
    scale_n = args.full_n / args.n
    per_method: dict[str, float] = {}
    for m in sorted({r["method"] for r in records}):
        runs = [
            r for r in records if r["method"] == m and r["status"] == "ok" and r.get("supervised")
        ]
        runs = [r for r in runs if r.get("epochs_run")]
        if not runs:
            continue
        full_s = []
        for b in args.full_bits:
            closest = min(runs, key=lambda r: abs(r["bits"] - b))
            per_epoch = closest["train_s"] / closest["epochs_run"]
            scale_dim = mlp_flops(args.full_dim, hidden, b) / mlp_flops(
                args.dim, hidden, closest["bits"]
            )
            full_s.append(per_epoch * scale_n * scale_dim)
        per_method[m] = sum(full_s)  # seconds per epoch summed over the full grid's bit lengths
    per_epoch_total = sum(per_method.values())
    worst = per_epoch_total * full_epochs
    return {
        "full_n": args.full_n,
        "full_dim": args.full_dim,
        "full_bits": list(args.full_bits),
        "full_epochs": full_epochs,
        "methods": sorted(per_method),
        "per_method_epoch_s": per_method,
        "worst_case_s": worst,
        "epochs_affordable": (BUDGET_MIN * 60 / per_epoch_total) if per_epoch_total else math.inf,
        "under_budget": worst < BUDGET_MIN * 60,
    }


def fmt(x: Any, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def tcl_vs_triplet(records: list[dict[str, Any]]) -> list[str]:
    ok = [r for r in records if r["status"] == "ok" and r.get("epochs_run")]

    def stats(names: Sequence[str]) -> tuple[float, float] | None:
        runs = [r for r in ok if r["method"] in names]
        if not runs:
            return None
        return (
            float(np.mean([r["train_s"] for r in runs])),
            float(np.mean([r["train_s"] / r["epochs_run"] for r in runs])),
        )

    tcl, tri = stats(["tcl"]), stats(TRIPLET_METHODS)
    present = [m for m in TRIPLET_METHODS if any(r["method"] == m for r in ok)]
    if tcl is None or tri is None:
        return [
            f"Not measured (needs successful runs of tcl and of one of {', '.join(TRIPLET_METHODS)})."
        ]
    cheaper = tcl[1] < tri[1]
    return [
        f"TCL: {tcl[0]:.1f} s per run, {tcl[1]:.3f} s per epoch (mean over bit lengths).",
        f"Triplet methods ({', '.join(present)}): {tri[0]:.1f} s per run, {tri[1]:.3f} s per epoch.",
        f"**TCL is {'cheaper' if cheaper else 'not cheaper'} per epoch** ({tri[1] / tcl[1]:.2f}x); "
        "per run the totals also reflect when early stopping ended each run.",
    ]


def write_report(
    path: Path,
    records: list[dict[str, Any]],
    float_rec: dict[str, Any],
    args: argparse.Namespace,
    params: Any,
    total_s: float,
    budget: dict[str, Any] | None,
) -> str:
    import torch

    cfg = fit_config(params)
    float_acc = float_rec.get("test_accuracy")
    lines = [
        "# Training benchmark",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`python bench/bench_train.py {shlex.join(args.argv)}`.",
        "",
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({args.threads or torch.get_num_threads()} threads); 1-min load average when the report was "
        f"written: {os.getloadavg()[0]:.2f} (a load above the core count means other processes shared "
        "the CPUs, so the timings are inflated; per-run values are in the JSON next to this file).",
        f"- Data (synthetic, seed {args.data_seed}): train {args.n} x {args.dim}, val {args.n_val}, "
        f"test {args.test_queries or args.n_test}, {args.classes} classes.",
        f"- FitConfig: epochs {cfg.epochs} (max steps {cfg.max_steps}), batch {cfg.batch_size}, lr {cfg.lr}, weight decay {cfg.weight_decay}, "
        f"patience {cfg.patience}, val queries {cfg.val_queries}, k {cfg.k}, device {cfg.device}; head "
        f"hidden {list(params.train.hidden_dims)}, dropout {params.train.dropout}.",
        f"- Float KNN (k={cfg.k}, {params.knn.metric}) test accuracy: {fmt(float_acc, '.4f')} "
        + (
            f"({fmt(float_rec.get('eval_s'))} s)."
            if float_acc is not None
            else f"(failed: {float_rec.get('error')})."
        ),
        "",
        "Each run is its own process: *peak RSS* is that process's maximum resident memory (MiB), "
        "data included (*data RSS*: the peak right after generating the data). *train s* is `fit`'s wall "
        "time (incl. the per-epoch val KNN; imports are done before the clock starts); *eval s* encodes "
        "train + test and runs the test KNN.",
        "",
        "| method | bits | status | epochs run | best epoch | train s | s / epoch | eval s | peak RSS MiB "
        "| data RSS MiB | val acc | test acc (Hamming) | vs float |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        ok = r["status"] == "ok"
        per_epoch = r["train_s"] / r["epochs_run"] if ok and r.get("epochs_run") else None
        delta = r["test_accuracy"] - float_acc if ok and float_acc is not None else None
        status = "ok" if ok else "error: " + str(r.get("error", "")).replace("|", "/")[:120]
        lines.append(
            f"| {r['method']} | {r['bits']} | {status} | {fmt(r.get('epochs_run'), 'd')} | "
            f"{fmt(r.get('best_epoch'), 'd')} | {fmt(r.get('train_s'))} | {fmt(per_epoch, '.2f')} | "
            f"{fmt(r.get('eval_s'))} | {fmt(r.get('peak_rss_mb'), '.0f')} | {fmt(r.get('rss_data_mb'), '.0f')} | "
            f"{fmt(r.get('val_accuracy'), '.4f')} | {fmt(r.get('test_accuracy'), '.4f')} | {fmt(delta, '+.4f')} |"
        )
    ok = [r for r in records if r["status"] == "ok"]
    train_total = sum(r["train_s"] for r in ok)
    sup_total = sum(r["train_s"] for r in ok if r.get("supervised"))
    lines += [
        "",
        f"**Total wall time: {total_s:.1f} s ({total_s / 60:.1f} min)** for {len(records)} runs + the float "
        f"baseline, processes, data generation and evaluation included; training alone {train_total:.1f} s "
        f"(supervised methods {sup_total:.1f} s = {sup_total / 60:.1f} min). "
        f"{len(records) - len(ok)} run(s) failed.",
        "",
        "## Per method (over bit lengths)",
        "",
        "| method | runs ok | train s (sum) | s / epoch (mean) | peak RSS MiB (max) | test acc (mean) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in ok if r["method"] == m]
        n_runs = sum(1 for r in records if r["method"] == m)
        if not runs:
            lines.append(f"| {m} | 0/{n_runs} | - | - | - | - |")
            continue
        epochs = [r["train_s"] / r["epochs_run"] for r in runs if r.get("epochs_run")]
        lines.append(
            f"| {m} | {len(runs)}/{n_runs} | {sum(r['train_s'] for r in runs):.1f} | "
            f"{fmt(float(np.mean(epochs)) if epochs else None, '.3f')} | "
            f"{max(r['peak_rss_mb'] for r in runs):.0f} | {np.mean([r['test_accuracy'] for r in runs]):.4f} |"
        )
    lines += ["", "## TCL vs triplet methods", "", *tcl_vs_triplet(records)]
    if budget is not None:
        verdict = "UNDER" if budget["under_budget"] else "OVER"
        lines += [
            "",
            "## Budget check",
            "",
            f"Full grid: {', '.join(budget['methods']) or '(no supervised method measured)'} x bits "
            f"{budget['full_bits']} on {budget['full_n']} x {budget['full_dim']}, up to {budget['full_epochs']} "
            "epochs each (worst case: no early stopping).",
            "",
            f"**Extrapolated worst case: {budget['worst_case_s'] / 60:.1f} min: {verdict} the "
            f"{BUDGET_MIN:.0f}-minute budget.** The grid fits if runs average at most "
            f"{budget['epochs_affordable']:.1f} epochs.",
            "",
            "| method | s per epoch, all full-grid bit lengths together |",
            "|---|---:|",
            *[f"| {m} | {s:.2f} |" for m, s in budget["per_method_epoch_s"].items()],
            "",
            "Scaling: linear in n; by the MLP's multiply-adds when dim differs (crude, the val KNN does "
            "not depend on dim). Measure at the full dim for a faithful estimate.",
        ]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(
        json.dumps(
            {"runs": records, "float": float_rec, "total_s": total_s, "budget": budget}, indent=2
        )
        + "\n"
    )
    return text


def run_grid(args: argparse.Namespace) -> int:
    params = load_bench_params(args)
    methods = resolve_methods(args.methods)
    bits_list = list(args.bits)
    start = time.perf_counter()
    print(f"float baseline on {args.n} x {args.dim} ...", flush=True)
    float_rec = run_child(args, FLOAT, 0)
    print(
        f"  float KNN test accuracy {fmt(float_rec.get('test_accuracy'), '.4f')} ({float_rec['status']})",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    grid = [(m, b) for m in methods for b in bits_list]
    for i, (m, b) in enumerate(grid, 1):
        rec = run_child(args, m, b)
        records.append(rec)
        if rec["status"] == "ok":
            msg = (
                f"ok {rec['train_s']:.1f} s train, {rec['epochs_run']} epochs, {rec['peak_rss_mb']:.0f} MiB, "
                f"test acc {rec['test_accuracy']:.4f}"
            )
        else:
            msg = f"FAILED: {rec.get('error')}"
        print(f"[{i}/{len(grid)}] {m}-{b}: {msg}", flush=True)
        # rewrite the report after every run, so an interrupted grid still leaves its results
        write_report(args.out, records, float_rec, args, params, time.perf_counter() - start, None)
    total = time.perf_counter() - start
    budget = budget_estimate(records, args, params) if args.budget_check else None
    write_report(args.out, records, float_rec, args, params, total, budget)
    print(f"total {total:.1f} s; report: {args.out}", flush=True)
    for line in tcl_vs_triplet(records):
        print(line)
    if budget is not None:
        verdict = "UNDER" if budget["under_budget"] else "OVER"
        print(
            f"budget check: extrapolated full grid (worst case, {budget['full_epochs']} epochs) "
            f"{budget['worst_case_s'] / 60:.1f} min -> {verdict} {BUDGET_MIN:.0f} min "
            f"(fits if runs average <= {budget['epochs_affordable']:.1f} epochs)"
        )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--params", default=str(REPO / "params.yaml"), help="params file with train/knn/methods"
    )
    p.add_argument("--n", type=int, default=90_000, help="training embeddings (KNN database)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--n-val", type=int, default=10_000)
    p.add_argument("--n-test", type=int, default=7_180)
    p.add_argument(
        "--test-queries", type=int, default=None, help="use only the first N test queries"
    )
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--bits", type=int, nargs="+", default=[12, 24, 36, 48])
    p.add_argument(
        "--methods", nargs="+", default=["all"], help="all | supervised | unsupervised | names"
    )
    p.add_argument("--epochs", type=int, default=None, help="default: params.yaml train.epochs")
    p.add_argument(
        "--max-steps", type=int, default=None, help="default: train.max_steps; 0 = no step budget"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--val-queries", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: torch's)"
    )
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per run")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the results file (required: a default overwrote the curated bench/RESULTS-*.md)",
    )
    p.add_argument(
        "--budget-check", action="store_true", help="extrapolate to the full grid vs 30 min"
    )
    p.add_argument("--full-n", type=int, default=90_000)
    p.add_argument("--full-dim", type=int, default=768)
    p.add_argument("--full-bits", type=int, nargs="+", default=[12, 24, 36, 48])
    p.add_argument(
        "--full-epochs", type=int, default=None, help="default: params.yaml train.epochs"
    )
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)  # child mode: one method
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single is None:
        if args.out is None:  # child runs (--single) write --result instead
            print(
                "bench_train.py: error: the following arguments are required: --out",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return run_grid(args)
    try:
        rec = run_single(args)
    except Exception as err:  # recorded by the parent; the grid goes on
        traceback.print_exc()
        rec = {
            "method": args.single,
            "bits": args.bits[0],
            "status": "error",
            "error": f"{type(err).__name__}: {err}",
        }
    if args.result is not None:
        args.result.write_text(json.dumps(rec))
    else:
        print(json.dumps(rec))
    return 0 if rec["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
