"""Defences benchmark: DP-SGD heads, ε-LDP code release, k-anonymous release, empirical audits.

Runs the library functions in one process (no DVC) on real MedMNIST files with fixed stand-in
features (raw pixels, as ``bench/bench_utility.py``; DINOv2 weights cannot be downloaded here):

    python bench/bench_dp.py --datasets breastmnist retinamnist --bits 12 48 \
        --out bench/RESULTS-dp.md

Sections (every number on the *test* split unless ``--split val``; epochs are selected on val by
the trainer / the DP plugin, the DP settings are the params.yaml defaults except ``dp.seed``,
fixed at 0 so a run reproduces — params.yaml's ``null`` draws it from OS entropy; the randomised
response below is seeded explicitly too). The numbers in bench/RESULTS-dp*.md came from the older
streams (Poisson draws and noise seeded by the fit seed): a rerun reproduces itself, not those
numbers bit for bit.

0. ``grid`` (tuning, run with ``--split val``): each ``--grid`` DP setting (params overrides such as
   ``dp.max_grad_norm=0.1,dp.lr=0.003``) for csq, tcl, cnnh at 12 bits and each ``--epsilons``,
   val KNN accuracy against the same method without DP. This is how the ``dp:`` defaults were
   chosen (bench/RESULTS-dp-val.md); test is never read with ``--split val`` (val replaces the
   queries and the membership non-members).

1. DP heads (csq, tcl, cnnh) at ε = 1, 3, 8 vs the same method without DP: Hamming-KNN accuracy
   (k=7) and its ratio to the non-DP head; a loss-threshold membership attack (train records vs
   test records) with TPR at 1 % / 10 % FPR next to its code-blind baseline (j + 1) / (n + 1)
   (``privacy.membership.blind_tpr_at_fpr``) and the DP ceiling ``e^ε · FPR + δ``.
2. One-run audit (Steinke, Nasr & Jagielski 2023) of a DP CSQ head at ε = 8 and of the
   non-private control: 200 out-of-distribution canaries (uniform-noise images with random
   labels), each inserted with probability 1/2; ε̂ at 95 % confidence.
3. ε-LDP release (randomised response on the database codes) for ε_code = 1, 4, 16, 64, ∞ of
   the non-DP CSQ head: KNN accuracy of clean test queries against the released database, and
   the linkage rate of a noisy re-acquisition (the record's features + Gaussian noise of 0.05 x
   the feature std, hashed by the head) to its own released code (Hamming nearest, ties split);
   the same release audited with worst-case canaries (a code vs its complement). One PNG per
   dataset (``--plots``, default bench/plots/ldp-<dataset>.png): retention and linkage vs ε_code.
4. k-anonymous release (k = 5, 20) of the database codes of every method in ``--kanon-methods``:
   share of records changed, balanced-accuracy retention, linkage before/after.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_utility import embeddings_for  # noqa: E402
from hashers import registry  # noqa: E402
from hashers.base import EmbeddingSet  # noqa: E402
from pipeline.artifacts import EmbeddingsFile, atomic_path, load_embeddings  # noqa: E402
from pipeline.common import parse_overrides  # noqa: E402
from pipeline.config import Params, load_params  # noqa: E402
from pipeline.evaluate import hamming_knn  # noqa: E402
from pipeline.knn import float_knn  # noqa: E402
from pipeline.train import embedding_set, fit_config, head_spec  # noqa: E402
from pipeline.train_dp import dp_config, dp_fit_config, dp_head_spec  # noqa: E402
from privacy.audit import audit_epsilon, loss_scores  # noqa: E402
from privacy.dp import dp_fit  # noqa: E402
from privacy.release import k_anonymize, randomized_response  # noqa: E402
from retrieval.codes import pack_bits  # noqa: E402

log = logging.getLogger("bench_dp")
DP_METHODS = ("csq", "tcl", "cnnh")
SECTIONS = ("grid", "dp", "audit", "ldp", "kanon")


def build(params: Params, method: str, bits: int, emb: EmbeddingsFile, *, dp: bool) -> Any:
    """A head as stage train (``dp=False``) or train_dp (``dp=True``: ``dp.standardize``) builds it."""
    spec = (dp_head_spec if dp else head_spec)(emb, params, bits)
    return registry.build(method, spec, params.method_config(method), seed=params.seed)


def train(
    params: Params, method: str, bits: int, emb: EmbeddingsFile, eps: float | None, device: str
) -> tuple[Any, dict[str, float]]:
    from hashers.trainer import fit

    head = build(params, method, bits, emb, dp=eps is not None)
    tr, va = embedding_set(emb, "train"), embedding_set(emb, "val")
    if eps is None:
        fit(head, tr, va, config=replace(fit_config(params, progress=False), device=device))
        return head, {}
    cfg = replace(dp_fit_config(params, progress=False), device=device)  # as stage train_dp
    _, report = dp_fit(head, tr, va, config=cfg, dp=dp_config(params, eps))
    return head, report.summary()


def codes_of(head: Any, x: np.ndarray) -> np.ndarray:
    return head.encode(torch.as_tensor(x, dtype=torch.float32)).numpy()


def knn_acc(emb: EmbeddingsFile, db: np.ndarray, q: np.ndarray, k: int) -> dict[str, float]:
    bits = db.shape[1]
    codes = {"train": pack_bits(db), "test": pack_bits(q)}
    rows, _ = hamming_knn(emb, codes, bits, [k])
    return rows[0]


def tpr_at(scores_in: np.ndarray, scores_out: np.ndarray, fpr: float) -> float:
    """Highest TPR of a threshold attack (higher score = member) whose FPR on the non-members is at
    most ``fpr``: the rule of ``privacy.membership.roc_numbers``, so its code-blind baseline is
    ``blind_tpr_at_fpr(len(scores_out), fpr)``. (The quantile threshold used before admitted
    floor((n - 1) fpr) non-members instead of floor(n fpr): 3 instead of 4 of 400 at 1 %.)"""
    from sklearn.metrics import roc_curve

    member = np.r_[np.ones(len(scores_in), bool), np.zeros(len(scores_out), bool)]
    f, t, _ = roc_curve(member, np.r_[scores_in, scores_out], drop_intermediate=False)
    return float(t[f <= fpr].max())


def mi_cell(scores_in: np.ndarray, scores_out: np.ndarray, fpr: float) -> str:
    """The start of an MI cell, ``"<TPR> (blind <baseline>; "`` (the caller appends the DP ceiling)."""
    from privacy.membership import blind_tpr_at_fpr

    blind = blind_tpr_at_fpr(len(scores_out), fpr)
    return f"{tpr_at(scores_in, scores_out, fpr):.3f} (blind {blind:.3f}; "


def linkage_rate(released: np.ndarray, probes: np.ndarray) -> float:
    """Share of probes whose own row (same index) is the Hamming nearest; ties split evenly."""
    hits = 0.0
    for i in range(len(probes)):
        d = (released != probes[i]).sum(axis=1)
        nearest = np.flatnonzero(d == d.min())
        hits += (1.0 / len(nearest)) if i in set(nearest.tolist()) else 0.0
    return hits / len(probes)


def probes_of(head: Any, emb: EmbeddingsFile, seed: int) -> np.ndarray:
    x = emb.x["train"]
    noise = np.random.default_rng(seed).normal(size=x.shape) * 0.05 * x.std()
    return codes_of(head, (x + noise).astype(np.float32))


def section_dp(params: Params, emb: EmbeddingsFile, dataset: str, bits_list, eps_list, device, out):
    k = params.knn.k
    for bits in bits_list:
        for method in DP_METHODS:
            base_acc = None
            for eps in [None, *eps_list]:
                t0 = time.perf_counter()
                head, rep = train(params, method, bits, emb, eps, device)
                head.cpu()
                db, q = codes_of(head, emb.x["train"]), codes_of(head, emb.x["test"])
                row = knn_acc(emb, db, q, k)
                if eps is None:
                    base_acc = row["accuracy"]
                cells = {"tpr1": "n/a (", "tpr10": "n/a ("}
                if method != "cnnh":  # cnnh's loss reads per-training-row targets
                    s_in = loss_scores(head, *tensors(emb, "train"))
                    s_out = loss_scores(head, *tensors(emb, "test"))
                    cells = {
                        "tpr1": mi_cell(s_in, s_out, 0.01),
                        "tpr10": mi_cell(s_in, s_out, 0.10),
                    }
                delta = rep.get("dp_delta", 0.0)
                eps_spent = rep.get("dp_epsilon", math.inf)
                ceil1 = min(1.0, math.exp(eps_spent) * 0.01 + delta) if rep else 1.0
                ceil10 = min(1.0, math.exp(eps_spent) * 0.10 + delta) if rep else 1.0
                out.append(
                    f"| {dataset} | {method} | {bits} | {'∞' if eps is None else f'{eps:g}'} | "
                    f"{eps_spent:.3f} | {rep.get('dp_noise_multiplier', 0.0):.3f} | "
                    f"{row['accuracy']:.3f} | {row['accuracy'] / base_acc:.3f} | "
                    f"{cells['tpr1']}≤ {ceil1:.3f}) | {cells['tpr10']}≤ {ceil10:.3f}) | "
                    f"{time.perf_counter() - t0:.0f} |"
                )
                print(out[-1], flush=True)


def section_grid(
    base: dict[str, Any], emb: EmbeddingsFile, dataset: str, grid, eps_list, device, out
):
    """DP settings at each ε against the same method without DP (run with ``--split val``)."""
    params = load_params(REPO / "params.yaml", base)
    k = params.knn.k
    for method in DP_METHODS:
        head, _ = train(params, method, 12, emb, None, device)
        base_acc = knn_acc(
            emb, codes_of(head.cpu(), emb.x["train"]), codes_of(head, emb.x["test"]), k
        )
        for setting in grid:
            p = load_params(REPO / "params.yaml", {**base, **parse_overrides(setting.split(","))})
            d = p.dp
            sched = dp_fit_config(p, progress=False)
            for eps in eps_list:
                t0 = time.perf_counter()
                head, rep = train(p, method, 12, emb, eps, device)
                head.cpu()
                row = knn_acc(emb, codes_of(head, emb.x["train"]), codes_of(head, emb.x["test"]), k)
                out.append(
                    f"| {dataset} | {method} | {d.max_grad_norm:g} | {sched.lr:g} | "
                    f"{sched.batch_size} | {sched.epochs} | {eps:g} | {rep['dp_noise_multiplier']:.3f} | "
                    f"{row['accuracy']:.3f} | {base_acc['accuracy']:.3f} | "
                    f"{row['accuracy'] / base_acc['accuracy']:.3f} | {time.perf_counter() - t0:.0f} |"
                )
                print(out[-1], flush=True)


def as_eval_split(emb: EmbeddingsFile, split: str) -> EmbeddingsFile:
    """``emb`` whose "test" queries are ``split``'s records (``--split val``: tuning never reads test)."""
    if split == "test":
        return emb
    return EmbeddingsFile(
        x={"train": emb.x["train"], "val": emb.x["val"], "test": emb.x[split]},
        y={"train": emb.y["train"], "val": emb.y["val"], "test": emb.y[split]},
        meta=emb.meta,
    )


def tensors(emb: EmbeddingsFile, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = embedding_set(emb, split)
    return s.x, s.y


def section_audit(
    params: Params, emb: EmbeddingsFile, dataset: str, device: str, out, m: int = 200
):
    from hashers.trainer import fit

    rng = np.random.default_rng(12345)
    tr = embedding_set(emb, "train")
    can_x = torch.as_tensor(rng.random((m, emb.dim)), dtype=torch.float32)
    can_y = torch.eye(emb.n_classes)[torch.as_tensor(rng.integers(0, emb.n_classes, m))]
    included = rng.random(m) < 0.5
    inc = torch.as_tensor(included)
    train_set = EmbeddingSet(torch.cat([tr.x, can_x[inc]]), torch.cat([tr.y, can_y[inc]]))
    va = embedding_set(emb, "val")
    cfg = fit_config(params, progress=False)
    cfg = type(cfg)(**{**cfg.__dict__, "device": device})
    for eps in (8.0, None):
        head = build(params, "csq", 12, emb, dp=eps is not None)
        if eps is None:
            fit(head, train_set, va, config=cfg)
            delta, label = 0.0, "non-private control"
        else:
            dcfg = replace(dp_fit_config(params, progress=False), device=device)
            _, rep = dp_fit(head, train_set, va, config=dcfg, dp=dp_config(params, eps))
            delta, label = rep.delta, f"DP ε = {rep.epsilon:.3f} (δ = {rep.delta:.2g})"
        head.cpu()
        res = audit_epsilon(loss_scores(head, can_x, can_y), included, delta=delta)
        out.append(
            f"| {dataset} | csq-12 | {label} | {m} | {res.guesses} | {res.correct} | "
            f"{res.epsilon_lower_bound:.3f} |"
        )
        print(out[-1], flush=True)


EPS_CODES = (1.0, 4.0, 16.0, 64.0, math.inf)


def ldp_png(
    path: Path, curves: dict[int, list[tuple[float, float, float]]], chance: float, title: str
):
    """Utility (balanced-accuracy retention) and linkage rate against ε_code: two panels sharing
    a log ε_code axis, ε_code = ∞ (no release noise) drawn at the right end; one line per code length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [e for e in EPS_CODES if math.isfinite(e)]
    x_inf = finite[-1] * 4  # where ∞ sits on the log axis
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(5, 5))
    for bits, pts in sorted(curves.items()):
        x = [e if math.isfinite(e) else x_inf for e, _, _ in pts]
        top.plot(x, [u for _, u, _ in pts], marker="o", label=f"{bits} bits")
        bottom.plot(x, [link for _, _, link in pts], marker="o", label=f"{bits} bits")
    top.axhline(1.0, color="k", linestyle=":", linewidth=1)
    top.set(ylabel="bal. acc retention", title=title)
    bottom.axhline(chance, color="k", linestyle="--", linewidth=1, label="chance 1/N")
    bottom.set(ylabel="linkage rate", xlabel="ε_code (per released code)", xscale="log")
    bottom.set_xticks([*finite, x_inf], [f"{e:g}" for e in finite] + ["∞"])
    for ax in (top, bottom):
        ax.axvline(x_inf, color="grey", alpha=0.3)
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def section_ldp(
    params: Params, emb: EmbeddingsFile, dataset: str, bits_list, device, out, audit, plot_dir
):
    k = params.knn.k
    curves: dict[int, list[tuple[float, float, float]]] = {}
    for bits in bits_list:
        head, _ = train(params, "csq", bits, emb, None, device)
        head.cpu()
        db, q = codes_of(head, emb.x["train"]), codes_of(head, emb.x["test"])
        probes = probes_of(head, emb, seed=7)
        base = knn_acc(emb, db, q, k)
        for eps_code in EPS_CODES:
            rel = randomized_response(db, eps_code, seed=0)
            row = knn_acc(emb, rel, q, k)
            retention = row["balanced_accuracy"] / base["balanced_accuracy"]
            link = linkage_rate(rel, probes)
            curves.setdefault(bits, []).append((eps_code, retention, link))
            out.append(
                f"| {dataset} | csq | {bits} | {eps_code:g} | {row['accuracy']:.3f} | "
                f"{retention:.3f} | {link:.3f} | {1 / len(db):.4f} |"
            )
            print(out[-1], flush=True)
            if math.isfinite(eps_code):
                rng = np.random.default_rng(int(eps_code) + bits)
                base_c = rng.random((2000, bits)) < 0.5
                secret = rng.random(2000) < 0.5
                canary = np.where(secret[:, None], ~base_c, base_c)
                noisy = randomized_response(canary, eps_code, seed=1)
                res = audit_epsilon((noisy != base_c).sum(axis=1).astype(float), secret, delta=0.0)
                row_a = (
                    f"| {bits} | {eps_code:g} | 2000 | {res.guesses} | {res.correct} | "
                    f"{res.epsilon_lower_bound:.3f} |"
                )
                if row_a not in audit:  # the canaries do not depend on the dataset
                    audit.append(row_a)
    if plot_dir is not None:
        chance = 1 / len(emb.y["train"])
        ldp_png(plot_dir / f"ldp-{dataset}.png", curves, chance, f"{dataset}: ε-LDP release (CSQ)")


def section_kanon(
    params: Params, emb: EmbeddingsFile, dataset: str, bits_list, methods, device, out
):
    kk = params.knn.k
    for bits in bits_list:
        for method in methods:
            head, _ = train(params, method, bits, emb, None, device)
            head.cpu()
            db, q = codes_of(head, emb.x["train"]), codes_of(head, emb.x["test"])
            probes = probes_of(head, emb, seed=7)
            base = knn_acc(emb, db, q, kk)
            link0 = linkage_rate(db, probes)
            for k in (5, 20):
                res = k_anonymize(db, k)
                row = knn_acc(emb, res.codes, q, kk)
                out.append(
                    f"| {dataset} | {method} | {bits} | {k} | {res.min_anonymity_before} | "
                    f"{res.changed.mean():.3f} | {base['balanced_accuracy']:.3f} | "
                    f"{row['balanced_accuracy'] / base['balanced_accuracy']:.3f} | "
                    f"{link0:.3f} → {linkage_rate(res.codes, probes):.3f} |"
                )
                print(out[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--bits", nargs="+", type=int, default=[12, 48])
    ap.add_argument(
        "--epsilons", nargs="*", type=float, default=[1.0, 3.0, 8.0],
        help="target ε of the DP heads; none: only the non-DP references",
    )  # fmt: skip
    ap.add_argument("--kanon-methods", nargs="+", default=["csq", "tcl", "cnnh", "dpsh"])
    ap.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=["dp", "audit", "ldp", "kanon"]
    )  # an unknown name ran nothing and still wrote --out: empty tables over the results file
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--plots",
        type=Path,
        default=REPO / "bench" / "plots",
        help="folder for ldp-<dataset>.png (section ldp)",
    )
    ap.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="queries (and membership non-members) of every section: val for tuning, test to report",
    )
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="section grid: one DP setting (params overrides, e.g. dp.max_grad_norm=0.1,dp.lr=0.003)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the results file (required: a default overwrote the curated bench/RESULTS-*.md)",
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # DP-SGD's Poisson draws, noise and dropout are seeded explicitly (params.yaml's dp.seed: null
    # would draw them from OS entropy): a bench must reproduce; its heads are never released
    base = {"tracking.enabled": False, "dp.seed": 0, **parse_overrides(args.overrides)}
    t0 = time.perf_counter()
    dp_rows = [
        "| dataset | method | bits | target ε | ε spent | σ | KNN acc | vs non-DP | "
        "MI TPR@1% FPR (blind; DP ceiling) | TPR@10% FPR (blind; ceiling) | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    audit_rows = [
        "| dataset | head | training | canaries | guesses | correct | ε̂ (95 %) |",
        "|---|---|---|---|---|---|---|",
    ]
    ldp_rows = [
        "| dataset | method | bits | ε_code | KNN acc | bal. acc retention | linkage | chance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ldp_audit = [
        "| bits | ε_code | canaries | guesses | correct | ε̂ (95 %) |",
        "|---|---|---|---|---|---|",
    ]
    kanon_rows = [
        "| dataset | method | bits | k | min anonymity before | share changed | bal. acc | "
        "retention | linkage before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    grid_rows = [
        "| dataset | method | C | lr | batch | epochs | ε | σ | KNN acc | non-DP acc | vs non-DP | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        for dataset in args.datasets:
            emb = load_embeddings(embeddings_for("pixels", dataset, args.root, Path(tmpdir), base))
            emb = as_eval_split(emb, args.split)
            params = load_params(REPO / "params.yaml", base)
            f_rows, _ = float_knn(emb, params.knn)
            k = params.knn.k  # the k of every Hamming table (was 7: StopIteration without it)
            acc = next(r for r in f_rows if r["k"] == k)["accuracy"]
            log.warning("%s float KNN acc (k = %d) %.3f", dataset, k, acc)
            if "dp" in args.sections:
                section_dp(params, emb, dataset, args.bits, args.epsilons, args.device, dp_rows)
            if "grid" in args.sections:
                section_grid(base, emb, dataset, args.grid, args.epsilons, args.device, grid_rows)
            if "audit" in args.sections:
                section_audit(params, emb, dataset, args.device, audit_rows)
            if "ldp" in args.sections:
                section_ldp(
                    params, emb, dataset, args.bits, args.device, ldp_rows, ldp_audit, args.plots
                )
            if "kanon" in args.sections:
                section_kanon(
                    params, emb, dataset, args.bits, args.kanon_methods, args.device, kanon_rows
                )
    total = time.perf_counter() - t0
    text = "\n".join(
        [
            f"Queries: the {args.split} split.",
            "",
            "## DP settings (grid)",
            *grid_rows,
            "",
            "## DP-SGD heads",
            *dp_rows,
            "",
            "## One-run audit of DP heads (canaries)",
            *audit_rows,
            "",
            "## ε-LDP release of the database codes",
            *ldp_rows,
            "",
            "Audit of the release (worst-case canaries: a code or its complement):",
            *ldp_audit,
            "",
            "## k-anonymous release of the database codes",
            *kanon_rows,
            "",
            f"Command: `python bench/bench_dp.py {' '.join(sys.argv[1:])}`; total {total:.0f} s "
            f"on device {args.device}.",
        ]
    )
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
