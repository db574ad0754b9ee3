"""Why can 12-bit codes beat 48-bit codes on a test split? Count the neighbours each KNN vote pools.

Tie-aware Hamming KNN (``retrieval.knn``) gives the k votes to every database code at a distance
below the k-th one, and shares the rest among all codes *at* the k-th distance. Short codes have
few distinct values, so that boundary group is large: the vote of a 12-bit code pools many more
than k neighbours, like a float KNN with a larger k. This probe measures both sides of that:

    python bench/probe_vote_pool.py --features pixels tiny-random --methods dpsh tcl hashnet

1. float KNN balanced accuracy on val and test at several k (does pooling more neighbours help on
   this set?), and
2. for heads trained at the study's defaults (seed 0 unless ``--seeds``), the number of training
   codes each test query's vote draws on — those strictly closer than its k-th nearest code plus
   the whole group at that distance — as median and mean over the test queries, at each length.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
from bench_utility import embeddings_for  # noqa: E402

from pipeline.artifacts import load_embeddings  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.train import encode_splits, train_one  # noqa: E402
from retrieval.codes import iter_hamming_chunks  # noqa: E402
from retrieval.knn import knn_float  # noqa: E402
from retrieval.metrics import balanced_accuracy  # noqa: E402


def vote_pool(q: np.ndarray, db: np.ndarray, n_bits: int, k: int) -> np.ndarray:
    """Per query: database codes at a Hamming distance <= its k-th smallest distance."""
    sizes = []
    for _, dist in iter_hamming_chunks(q, db, n_bits):
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
        sizes.append((dist <= kth).sum(axis=1))
    return np.concatenate(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--features", nargs="+", default=["pixels", "tiny-random"])
    ap.add_argument("--methods", nargs="+", default=["dpsh", "tcl", "hashnet"])
    ap.add_argument("--bits", nargs="+", type=int, default=[12, 48])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--ks", nargs="+", type=int, default=[3, 7, 15, 31, 63])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    base = {"tracking.enabled": False}
    k = load_params(REPO / "params.yaml", base).knn.k
    knn_rows, pool_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for features in args.features:
            for dataset in args.datasets:
                emb = load_embeddings(embeddings_for(features, dataset, args.root, Path(tmp), base))
                for split in ("val", "test"):
                    pred = knn_float(emb.x[split], emb.x["train"], emb.y["train"], args.ks)
                    bal = [balanced_accuracy(emb.y[split], pred[kk]) for kk in args.ks]
                    knn_rows.append(f"| {features} | {dataset} | {split} | "
                                    + " | ".join(f"{b:.3f}" for b in bal) + " |")  # fmt: skip
                for method in args.methods:
                    cells = []
                    for bits in args.bits:
                        sizes = []
                        for seed in args.seeds:
                            over = {**base, "data.datasets": [dataset], "seed": seed}
                            params = load_params(REPO / "params.yaml", over)
                            head, _, _ = train_one(
                                params,
                                dataset=dataset,
                                method_name=method,
                                bits=bits,
                                emb=emb,
                                progress=False,
                            )
                            codes = encode_splits(head, emb)
                            sizes.append(vote_pool(codes["test"], codes["train"], bits, k))
                        s = np.concatenate(sizes)
                        cells.append(f"{np.median(s):.0f} / {s.mean():.1f}")
                    pool_rows.append(
                        f"| {features} | {dataset} | {method} | " + " | ".join(cells) + " |"
                    )
    print("Float KNN balanced accuracy by k:\n")
    print("| features | dataset | split | " + " | ".join(f"k = {kk}" for kk in args.ks) + " |")
    print("|---|---|---|" + "---:|" * len(args.ks))
    print("\n".join(knn_rows))
    print(f"\nTraining codes pooled by each test query's k = {k} vote (median / mean):\n")
    print("| features | dataset | method | " + " | ".join(f"{b} bits" for b in args.bits) + " |")
    print("|---|---|---|" + "---:|" * len(args.bits))
    print("\n".join(pool_rows))


if __name__ == "__main__":
    main()
