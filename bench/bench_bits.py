"""Why can 48-bit codes score below 12-bit ones? A diagnosis on the validation split only.

Each head is trained with one half of the val split (stratified, seeded) as its selection set and
scored, every epoch, on the other half — so selection and scoring use disjoint images:

    python bench/bench_bits.py --features pixels --bits 12 48 --seeds 0 1 2 --jobs 2

Per (dataset, method, bits) it reports, as balanced accuracy on the held-out val half (mean over
seeds): ``selected`` (the epoch the trainer picked), ``oracle`` (the best epoch in hindsight: the
gap is selection noise), ``last`` (the last epoch run: a fall from the oracle is over-fitting),
``float u`` (float KNN on the head's relaxed outputs at the selected epoch: the gap to
``selected`` is the quantisation loss) and the float KNN of the input features.

``--json F`` keeps every curve; ``--replay F`` then replays smoothing windows, ``--rules`` the
selection rules of :data:`RULES`, and ``--ceiling`` asks whether a shortfall is selection noise or
the representation (:func:`replay_ceiling`), all without training.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
from bench_utility import embeddings_for  # noqa: E402

from hashers import registry  # noqa: E402
from hashers.base import EmbeddingSet, HashingMethod  # noqa: E402
from hashers.trainer import SELECTION_SCORES, EpochSelector, TrainingPlugin, fit  # noqa: E402
from pipeline.artifacts import load_embeddings  # noqa: E402
from pipeline.common import parse_overrides  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.train import embedding_set, fit_config, head_spec  # noqa: E402
from retrieval.codes import pack_bits  # noqa: E402
from retrieval.knn import knn_float, knn_hamming  # noqa: E402
from retrieval.metrics import accuracy, balanced_accuracy  # noqa: E402

log = logging.getLogger("bench_bits")


def halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of row indices into two halves."""
    g = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(y):
        rows = g.permutation(np.flatnonzero(y == c))
        a += rows[: len(rows) // 2].tolist()
        b += rows[len(rows) // 2 :].tolist()
    return np.sort(a), np.sort(b)


class HeldOut(TrainingPlugin):
    """Scores the head on the held-out val half at the end of every epoch."""

    def __init__(self, train: EmbeddingSet, held: EmbeddingSet, k: int) -> None:
        self.train, self.held, self.k = train, held, k
        self.ytr = train.y.argmax(1).numpy()
        self.yh = held.y.argmax(1).numpy()
        self.method: HashingMethod | None = None

    def setup(self, method, optimizer, train):
        self.method = method
        return optimizer

    def epoch_end(self, epoch: int) -> dict[str, float]:
        m = self.method
        assert m is not None
        was = m.training
        m.eval()
        with torch.no_grad():
            dev = next(m.parameters()).device
            u_tr = m(self.train.x.to(dev)).cpu().numpy()
            u_h = m(self.held.x.to(dev)).cpu().numpy()
            c_tr, c_h = m.encode(self.train.x.to(dev)).cpu(), m.encode(self.held.x.to(dev)).cpu()
        m.train(was)
        bits = m.spec.n_bits
        ham = knn_hamming(pack_bits(c_h), pack_bits(c_tr), bits, self.ytr, [self.k])[self.k]
        flo = knn_float(u_h, u_tr, self.ytr, [self.k])[self.k]
        return {
            "held_hamming": balanced_accuracy(self.yh, ham),
            "held_hamming_acc": accuracy(self.yh, ham),
            "held_float_u": balanced_accuracy(self.yh, flo),
        }


def smoothed_pick(curve: list[float], window: int) -> int:
    """The epoch :class:`~hashers.trainer.EpochSelector` (``train.selection_window``) picks from a
    recorded selection-score curve, replayed without training (early stopping aside: the curve
    ends where the plain rule's run stopped)."""
    sel = EpochSelector(window)
    for epoch, score in enumerate(curve):
        sel.update(epoch, score, acc=score, module=None)
    sel.finish()
    return sel.best_epoch


def replay(cells: list[dict[str, Any]], windows: list[int]) -> None:
    """Replay selection rules on recorded curves, per feature set: held-out balanced accuracy at
    the picked epoch (mean over cells), its gap to the best epoch in hindsight, and the 48 - 12
    bits difference per (dataset, method), each bit length averaged over seeds."""
    off = sum(smoothed_pick(r["sel_curve"], 1) != r["best_epoch"] for r in cells)
    print(f"window 1 re-picks the run's own epoch in {len(cells) - off} of {len(cells)} cells"
          + (" (the others: near-ties that a rounded curve cannot tell apart)" if off else ""))  # fmt: skip
    print(
        "| features | window | held-out at pick | gap to oracle | pairs 48 < 12 by > 0.02 | worst 48 - 12 |"
    )
    print("|---|---|---|---|---|---|")
    for features in dict.fromkeys(r["features"] for r in cells):
        group = [r for r in cells if r["features"] == features]
        for w in windows:
            at: dict[tuple, list[float]] = {}
            gaps = []
            for r in group:
                e = smoothed_pick(r["sel_curve"], w)
                at.setdefault((r["dataset"], r["method"], r["bits"]), []).append(r["curve"][e])
                gaps.append(max(r["curve"]) - r["curve"][e])
            diff = [np.mean(at[(d, m, 48)]) - np.mean(at[(d, m, 12)])
                    for d, m in {k[:2] for k in at} if (d, m, 48) in at and (d, m, 12) in at]  # fmt: skip
            print(f"| {features} | {w} | {np.mean([np.mean(v) for v in at.values()]):.4f} | "
                  f"{np.mean(gaps):.4f} | {sum(d < -0.02 for d in diff)} of {len(diff)} | "
                  f"{min(diff, default=0):+.3f} |")  # fmt: skip


#: selection rules replayed by ``--replay F --rules``: each score of the trainer, and the mean of
#: the class-balanced and the plain soft accuracy (a candidate that weighs the majority class too)
RULES: dict[str, Any] = {
    **{s: (lambda sc, s=s: sc[s]) for s in SELECTION_SCORES},
    "mean_soft": lambda sc: [
        (a + b) / 2 for a, b in zip(sc["balanced_soft_accuracy"], sc["soft_accuracy"], strict=True)
    ],
}


def pick_with_patience(curve: list[float], patience: int) -> int:
    """The epoch the trainer's plain rule picks on ``curve``, early stopping included."""
    sel = EpochSelector(1)
    for epoch, score in enumerate(curve):
        sel.update(epoch, score, acc=score, module=None)
        if sel.stale(epoch, patience):
            break
    sel.finish()
    return sel.best_epoch


#: methods whose training depends on the epoch budget (HashNet's continuation maps the authors'
#: run onto the epochs the trainer passes, ``on_epoch_start(epoch, n_epochs)``): their curves
#: cannot be cut to replay a shorter ``train.epochs``
BUDGET_SCHEDULED = ("hashnet",)


def truncated(cell: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``cell`` as if trained for at most ``epochs`` epochs: every per-epoch curve cut there."""
    if epochs < 1:
        raise SystemExit(f"--max-epochs {epochs}: use 1 or more")
    if cell["method"] in BUDGET_SCHEDULED and len(cell["curve"]) > epochs:
        raise SystemExit(
            f"--max-epochs {epochs}: {cell['method']}'s schedule follows the epoch budget "
            f"(its first {epochs} of {len(cell['curve'])} epochs are not a {epochs}-epoch run); "
            "drop its cells or record them at that budget"
        )
    cut = {k: cell[k][:epochs] for k in ("curve", "curve_acc", "sel_curve") if k in cell}
    if "sel_scores" in cell:
        cut["sel_scores"] = {name: v[:epochs] for name, v in cell["sel_scores"].items()}
    return {**cell, **cut}


def blocks(cells: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """``((features, dataset), its cells)`` in first-seen order."""
    for fd in dict.fromkeys((r["features"], r["dataset"]) for r in cells):
        yield fd, [r for r in cells if (r["features"], r["dataset"]) == fd]


def replay_rules(cells: list[dict[str, Any]], patience: int) -> None:
    """Replay the selection rules of :data:`RULES` on curves recorded without early stopping
    (run with ``--set train.patience=1000``): held-out balanced and plain accuracy at the pick,
    cells (method x bits, mean over seeds) under 0.98 x the input float KNN on the same half, the
    mean 48 - 12 bits difference of balanced accuracy, the mean picked epoch, and each rule's
    change of held-out balanced accuracy against the first rule (the trainer's default): mean
    over cells ± 1 SE across cells, and the cells it raises / lowers."""
    print(
        "| features | dataset | rule | held-out bal. acc | held-out acc | cells bal < 0.98 float "
        "| cells acc < 0.98 float | mean 48 - 12 (bal.) | mean epoch | vs first rule (± SE) "
        "| cells up / down |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fd, group in blocks(cells):
        first: dict[tuple, float] = {}
        for i, (name, rule) in enumerate(RULES.items()):
            bal: dict[tuple, list[float]] = {}
            acc: dict[tuple, list[float]] = {}
            ref: dict[tuple, list[tuple[float, float]]] = {}
            epochs = []
            for r in group:
                e = pick_with_patience(rule(r["sel_scores"]), patience)
                epochs.append(e)
                key = (r["method"], r["bits"])
                bal.setdefault(key, []).append(r["curve"][e])
                acc.setdefault(key, []).append(r["curve_acc"][e])
                ref.setdefault(key, []).append((r["input_float"], r["input_float_acc"]))
            cell_bal = {k: float(np.mean(v)) for k, v in bal.items()}
            if i == 0:
                first = cell_bal
            change = np.array([cell_bal[k] - first[k] for k in cell_bal])
            se = change.std(ddof=1) / np.sqrt(len(change)) if len(change) > 1 else float("nan")
            low_bal = sum(cell_bal[k] < 0.98 * np.mean([f for f, _ in ref[k]]) for k in bal)
            low_acc = sum(np.mean(acc[k]) < 0.98 * np.mean([a for _, a in ref[k]]) for k in acc)
            diff = [cell_bal[(m, 48)] - cell_bal[(m, 12)]
                    for m in {k[0] for k in bal} if (m, 48) in bal and (m, 12) in bal]  # fmt: skip
            print(f"| {fd[0]} | {fd[1]} | {name} | {np.mean(list(cell_bal.values())):.4f} "
                  f"| {np.mean([np.mean(v) for v in acc.values()]):.4f} | {low_bal}/{len(bal)} "
                  f"| {low_acc}/{len(acc)} | {np.mean(diff):+.4f} | {np.mean(epochs):.1f} "
                  f"| {change.mean():+.4f} ± {se:.4f} | {(change > 0).sum()} / {(change < 0).sum()} |")  # fmt: skip


def replay_ceiling(cells: list[dict[str, Any]], patience: int) -> None:
    """Is a head's shortfall selection noise or its representation? From curves recorded without
    early stopping (``--set train.patience=1000``), held-out balanced accuracy per (features,
    dataset), mean over cells: at the trainer's pick (the run's own selection score, replayed
    with ``patience``); at the epoch whose held-out score, averaged over the *other* seeds of the
    same method and length, is highest (a population-optimal epoch, chosen without this run's
    own held-out noise, among the epochs every seed reached, so early-stopped curves replay
    too); at the one epoch that is best for the whole block on average (in hindsight); at each
    run's own best epoch (oracle: also picks up the held-out half's noise); and the input
    features' float KNN on the same halves."""
    print(
        "| features | dataset | trainer's pick | other seeds' best epoch | best fixed epoch "
        "(epoch) | oracle | input float KNN |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for fd, group in blocks(cells):
        by_key: dict[tuple, list[dict[str, Any]]] = {}
        for r in group:
            by_key.setdefault((r["method"], r["bits"]), []).append(r)
        picked, cross = [], []
        for runs in by_key.values():
            for i, r in enumerate(runs):
                picked.append(r["curve"][pick_with_patience(r["sel_curve"], patience)])
                others = [o["curve"] for j, o in enumerate(runs) if j != i]
                if others:
                    # Early-stopped runs end at different epochs: only epochs every seed reached.
                    common = min(len(c) for c in [r["curve"], *others])
                    mean_others = np.mean([c[:common] for c in others], axis=0)
                    cross.append(r["curve"][int(np.argmax(mean_others))])
        length = min(len(r["curve"]) for r in group)
        mean_curve = np.mean([r["curve"][:length] for r in group], axis=0)
        print(f"| {fd[0]} | {fd[1]} | {np.mean(picked):.3f} | "
              f"{np.mean(cross) if cross else float('nan'):.3f} | {mean_curve.max():.3f} "
              f"({int(mean_curve.argmax())}) | {np.mean([max(r['curve']) for r in group]):.3f} | "
              f"{np.mean([r['input_float'] for r in group]):.3f} |")  # fmt: skip


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    emb = load_embeddings(Path(job["path"]))
    params = load_params(REPO / "params.yaml", {**job["base"], "seed": job["seed"]})
    train, val = embedding_set(emb, "train"), embedding_set(emb, "val")
    sel_idx, held_idx = halves(val.y.argmax(1).numpy(), job["seed"])
    sel, held = val.subset(torch.as_tensor(sel_idx)), val.subset(torch.as_tensor(held_idx))
    spec = head_spec(emb, params, job["bits"])
    method = registry.build(
        job["method"], spec, params.method_config(job["method"]), seed=job["seed"]
    )
    plugin = HeldOut(train, held, params.knn.k)
    result = fit(method, train, sel, config=fit_config(params, progress=False), plugin=plugin)
    h = result.history
    at = next(r for r in h if int(r["epoch"]) == result.best_epoch)
    return {
        **{k: job[k] for k in ("features", "dataset", "method", "bits", "seed")},
        "selected": at["held_hamming"],
        "oracle": max(r["held_hamming"] for r in h),
        "last": h[-1]["held_hamming"],
        "float_u": at["held_float_u"],
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "curve": [round(r["held_hamming"], 4) for r in h],
        "curve_acc": [round(r["held_hamming_acc"], 4) for r in h],
        # the selection half's score per epoch: other selection rules are replayed on it
        "sel_curve": [r[f"val_{params.train.selection}"] for r in h],
        "sel_scores": {s: [r[f"val_{s}"] for r in h] for s in SELECTION_SCORES},
    }


def replay_blocks(files: list[Path]) -> None:
    """Per file and (features, dataset) block: the mean over its cells of the held-out balanced
    accuracy and accuracy at the selected epoch, beside the input's float KNN on the same halves
    and their ratio (the retention). One row per file, so runs that differ in one ``--set`` (the
    file's ``overrides``) compare block by block."""
    print(
        "| overrides | features | dataset | cells | bal. acc | float | retention "
        "| acc | float | retention |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for f in files:
        data = json.loads(f.read_text())
        blocks: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for c in data["cells"]:
            blocks.setdefault((c["features"], c["dataset"]), []).append(c)
        for (features, dataset), cs in sorted(blocks.items()):
            bal = np.mean([c["selected"] for c in cs])
            acc = np.mean([c["curve_acc"][c["best_epoch"]] for c in cs])
            fl = np.mean([c["input_float"] for c in cs])
            fl_acc = np.mean([c["input_float_acc"] for c in cs])
            print(f"| {' '.join(data['overrides']) or 'defaults'} | {features} | {dataset} "
                  f"| {len(cs)} | {bal:.3f} | {fl:.3f} | {bal / fl:.3f} | {acc:.3f} "
                  f"| {fl_acc:.3f} | {acc / fl_acc:.3f} |")  # fmt: skip


def _seed_means(cells: list[dict[str, Any]]) -> dict[tuple[str, str], dict[tuple[str, int], dict]]:
    """``{(features, dataset): {(method, bits): {number: mean over seeds}}}`` of ``selected``,
    ``last`` and ``oracle``."""
    pooled: dict[tuple[str, str], dict[tuple[str, int], list[dict[str, Any]]]] = {}
    for c in cells:
        block = pooled.setdefault((c["features"], c["dataset"]), {})
        block.setdefault((c["method"], int(c["bits"])), []).append(c)
    return {
        b: {
            k: {n: float(np.mean([c[n] for c in cs])) for n in ("selected", "last", "oracle")}
            for k, cs in by_cell.items()
        }
        for b, by_cell in pooled.items()
    }


def replay_compare(off: Path, on: Path) -> None:
    """Two runs that differ in one ``--set`` (``off`` and ``on``), block by block, over the cells
    (method x bits, each a mean over seeds) both hold: held-out balanced accuracy at the selected,
    last and best epochs, cells better on, the 48 - 12 difference (mean over methods, and methods
    with 48 < 12 bits) and the selection gap (oracle - selected)."""
    a_all, b_all = (_seed_means(json.loads(f.read_text())["cells"]) for f in (off, on))
    print("| features | dataset | selected off | selected on | cells better on | last off "
          "| last on | oracle off | oracle on |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    second = []
    for block in sorted(a_all.keys() & b_all.keys()):
        a, b = a_all[block], b_all[block]
        keys = sorted(a.keys() & b.keys())

        def col(d: dict, n: str, keys: list = keys) -> np.ndarray:
            return np.array([d[k][n] for k in keys])

        sa, sb = col(a, "selected"), col(b, "selected")
        print(f"| {block[0]} | {block[1]} | {sa.mean():.3f} | {sb.mean():.3f} "
              f"| {(sb > sa).sum()}/{len(keys)} | {col(a, 'last').mean():.3f} "
              f"| {col(b, 'last').mean():.3f} | {col(a, 'oracle').mean():.3f} "
              f"| {col(b, 'oracle').mean():.3f} |")  # fmt: skip
        methods = sorted({m for m, bits in keys if (m, 12) in keys and (m, 48) in keys})

        def d48(d: dict, methods: list = methods) -> np.ndarray:
            return np.array([d[(m, 48)]["selected"] - d[(m, 12)]["selected"] for m in methods])

        da, db = d48(a), d48(b)
        gap_a, gap_b = col(a, "oracle") - sa, col(b, "oracle") - sb
        second.append(
            f"| {block[0]} | {block[1]} | {da.mean():+.3f} | {db.mean():+.3f} "
            f"| {(da < 0).sum()}/{len(methods)} | {(db < 0).sum()}/{len(methods)} "
            f"| {gap_a.mean():.3f} | {gap_b.mean():.3f} |"
        )
    print("\n| features | dataset | 48 - 12 off | 48 - 12 on | methods 48 < 12 off | on "
          "| selection gap off | on |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(second))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--features", nargs="+", default=["pixels"])
    ap.add_argument("--methods", nargs="+", default=["supervised"])
    ap.add_argument("--bits", nargs="+", type=int, default=[12, 48])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        default=None,
        help="--json file(s), cells pooled: replay selection rules",
    )
    ap.add_argument("--windows", nargs="+", type=int, default=[1, 3, 5, 7])
    ap.add_argument("--rules", action="store_true", help="with --replay: replay RULES instead")
    ap.add_argument(
        "--blocks",
        action="store_true",
        help="with --replay: block means and retentions, one row per file (replay_blocks)",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="with --replay: selection noise vs representation (replay_ceiling)",
    )
    ap.add_argument(
        "--patience", type=int, default=10, help="--rules, --ceiling: early-stopping patience"
    )
    ap.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="with --replay: cut every recorded curve to its first N epochs (a shorter "
        "train.epochs, replayed)",
    )
    ap.add_argument(
        "--compare",
        type=Path,
        nargs=2,
        metavar=("OFF", "ON"),
        default=None,
        help="two --json files of runs that differ in one --set: block table (replay_compare)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.compare:
        replay_compare(*args.compare)
        return
    cells = [c for f in args.replay or [] for c in json.loads(f.read_text())["cells"]]
    if args.max_epochs is not None:
        cells = [truncated(c, args.max_epochs) for c in cells]
    if args.replay and args.blocks:
        if args.max_epochs is not None:
            ap.error("--blocks reads the selected epochs as recorded; drop --max-epochs")
        replay_blocks(args.replay)
        return
    if args.replay and args.ceiling:
        replay_ceiling(cells, args.patience)
        return
    if args.replay and args.rules:
        replay_rules(cells, args.patience)
        return
    if args.replay:
        replay(cells, args.windows)
        return
    methods = (
        [n for n in registry.names() if registry.get(n).supervised]
        if args.methods == ["supervised"]
        else args.methods
    )
    base = {"tracking.enabled": False, **parse_overrides(args.overrides)}
    jobs, floats = [], {}
    with tempfile.TemporaryDirectory() as tmpdir:
        for features in args.features:
            for dataset in args.datasets:
                path = embeddings_for(features, dataset, args.root, Path(tmpdir), base)
                emb = load_embeddings(path)
                k = load_params(REPO / "params.yaml", base).knn.k
                for seed in args.seeds:
                    _, held_idx = halves(emb.y["val"], seed)
                    pred = knn_float(emb.x["val"][held_idx], emb.x["train"], emb.y["train"], [k])
                    floats[(features, dataset, seed)] = balanced_accuracy(
                        emb.y["val"][held_idx], pred[k]
                    )
                    floats[(features, dataset, seed, "acc")] = accuracy(
                        emb.y["val"][held_idx], pred[k]
                    )
                jobs += [
                    {"features": features, "dataset": dataset, "path": str(path), "method": m,
                     "bits": b, "seed": s, "base": base}
                    for m in methods for b in args.bits for s in args.seeds
                ]  # fmt: skip
        if args.jobs > 1:
            with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
                results = list(pool.imap_unordered(run_cell, jobs))
        else:
            results = [run_cell(j) for j in jobs]
        for r in results:
            r["input_float"] = floats[(r["features"], r["dataset"], r["seed"])]
            r["input_float_acc"] = floats[(r["features"], r["dataset"], r["seed"], "acc")]
    print(
        "| features | dataset | method | bits | selected | oracle | last | float u | input float |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    keys = dict.fromkeys((r["features"], r["dataset"], r["method"], r["bits"]) for r in jobs)
    for key in keys:
        rs = [r for r in results if (r["features"], r["dataset"], r["method"], r["bits"]) == key]
        fl = np.mean([floats[(key[0], key[1], r["seed"])] for r in rs])
        cols = [np.mean([r[c] for r in rs]) for c in ("selected", "oracle", "last", "float_u")]
        print(f"| {' | '.join(map(str, key))} | " + " | ".join(f"{c:.3f}" for c in cols)
              + f" | {fl:.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"cells": results, "overrides": args.overrides}, indent=1))


if __name__ == "__main__":
    main()
