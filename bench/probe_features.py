"""How much class signal do the stand-in features carry? Reference learners on held-out val halves.

The hashing heads are compared with the float KNN of their inputs. When a head falls short, this
probe tells whether any simple learner does better on the same features, and whether the
per-feature standardisation of the heads' inputs (``train.standardize``) changes the geometry the
float KNN sees. Same stratified val halves as ``bench/bench_bits.py`` (the first half is unused
here: no learner below selects anything on val; scores are on the held-out half):

    python bench/probe_features.py --features pixels tiny-random --seeds 0 1 2

Per (features, dataset), mean over seeds of balanced accuracy (plain accuracy in brackets):
Euclidean KNN (``knn.k``) on the raw and on the standardised features, and on the vectors the
heads' first linear layer reads (``head input``: the per-sample LayerNorm of the standardised
features, as in :class:`hashers.heads.MLPHead`, up to its floor on near-constant columns) and
on the LayerNorm of the centred features
(``centred + LN``, the same without per-feature scaling); the raw-feature KNN with each vote
divided by its class's training frequency (``knn prior-weighted``: a vote corrected for class
imbalance); logistic regression (C = 0.1, unweighted and with balanced class weights) and a
512-unit MLP classifier (the heads' hidden width; scikit-learn defaults otherwise) on the
standardised features.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_bits import halves  # noqa: E402
from bench_utility import embeddings_for  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from pipeline.artifacts import load_embeddings  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from retrieval.knn import float_distance_chunks, knn_float, tie_aware_votes  # noqa: E402
from retrieval.metrics import accuracy, balanced_accuracy  # noqa: E402

LEARNERS = (
    "knn raw",
    "knn standardised",
    "knn head input",
    "knn centred + LN",
    "knn prior-weighted",
    "logreg",
    "logreg balanced",
    "mlp",
)


def layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Per-row LayerNorm without affine parameters (``torch.nn.LayerNorm`` at initialisation)."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)


def prior_weighted_knn(x_tr, y_tr, x_q, k: int) -> np.ndarray:
    """Tie-aware KNN whose vote for class c is divided by c's share of the training set."""
    onehot = np.eye(int(y_tr.max()) + 1, dtype=np.float32)[y_tr]
    votes = np.concatenate(
        [tie_aware_votes(d, onehot, k) for _, d in float_distance_chunks(x_q, x_tr)]
    )
    return (votes / onehot.mean(axis=0)).argmax(axis=1)


def scores(x_tr, y_tr, x_q, y_q, *, k: int, seed: int) -> dict[str, tuple[float, float]]:
    """``{learner: (balanced accuracy, accuracy)}`` on the queries ``x_q``."""
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    s_tr, s_q = (x_tr - mu) / sd, (x_q - mu) / sd
    preds = {
        "knn raw": knn_float(x_q, x_tr, y_tr, [k])[k],
        "knn standardised": knn_float(s_q, s_tr, y_tr, [k])[k],
        "knn head input": knn_float(layer_norm(s_q), layer_norm(s_tr), y_tr, [k])[k],
        "knn centred + LN": knn_float(layer_norm(x_q - mu), layer_norm(x_tr - mu), y_tr, [k])[k],
        "knn prior-weighted": prior_weighted_knn(x_tr, y_tr, x_q, k),
    }
    for name, weights in (("logreg", None), ("logreg balanced", "balanced")):
        model = LogisticRegression(C=0.1, max_iter=3000, class_weight=weights)
        preds[name] = model.fit(s_tr, y_tr).predict(s_q)
    mlp = MLPClassifier(hidden_layer_sizes=(512,), max_iter=200, random_state=seed)
    preds["mlp"] = mlp.fit(s_tr, y_tr).predict(s_q)
    return {n: (balanced_accuracy(y_q, p), accuracy(y_q, p)) for n, p in preds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--features", nargs="+", default=["pixels", "tiny-random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    base = {"tracking.enabled": False}
    k = load_params(REPO / "params.yaml", base).knn.k
    print("| features | dataset | " + " | ".join(LEARNERS) + " |")
    print("|---|---|" + "---:|" * len(LEARNERS))
    with tempfile.TemporaryDirectory() as tmp:
        for features in args.features:
            for dataset in args.datasets:
                emb = load_embeddings(embeddings_for(features, dataset, args.root, Path(tmp), base))
                x_tr, y_tr = emb.x["train"], emb.y["train"]
                if y_tr.ndim != 1:
                    raise SystemExit(f"{dataset}: multi-label; this probe takes single-label sets")
                runs = []
                for seed in args.seeds:
                    _, held = halves(emb.y["val"], seed)
                    runs.append(
                        scores(x_tr, y_tr, emb.x["val"][held], emb.y["val"][held], k=k, seed=seed)
                    )
                cells = [np.mean([r[n] for r in runs], axis=0) for n in LEARNERS]
                print(f"| {features} | {dataset} | "
                      + " | ".join(f"{b:.3f} ({a:.3f})" for b, a in cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
