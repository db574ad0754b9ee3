"""Utility check: hashed KNN vs the pipeline's own float KNN, every method x every bit length.

Runs the pipeline's library functions in one process (no DVC), on real MedMNIST files:

    python bench/bench_utility.py --root ../shared/data/medmnist --datasets breastmnist retinamnist \
        --features pixels tiny-random --out bench/RESULTS-utility.md

Feature sets (DINOv2 weights cannot be downloaded in this sandbox, so both are stand-ins):
* ``pixels``: the raw 28x28(x3) pixels, flattened, scaled to [0, 1] — passed through the
  *bring-your-own-embeddings* path of the extract stage (a user ``.npz``);
* ``tiny-random``: the extract stage with the seeded tiny random DINOv2 (``cls_mean`` pooling).
With real weights, pass ``--features dinov2`` (uses ``facebook/dinov2-base`` from the HF cache).

For each dataset the float baseline is :func:`pipeline.knn.float_knn` and every method is trained by
:func:`pipeline.train.train_one` with the params.yaml settings, evaluated by
:func:`pipeline.evaluate.hamming_knn` (same k, same tie-aware voting).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even beside another editable install

from hashers import registry  # noqa: E402
from pipeline.artifacts import load_embeddings  # noqa: E402
from pipeline.common import parse_overrides  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.evaluate import hamming_knn  # noqa: E402
from pipeline.extract import extract_dataset  # noqa: E402
from pipeline.knn import float_knn  # noqa: E402
from pipeline.train import encode_splits, train_one  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    ap.add_argument("--features", nargs="+", default=["pixels"])
    ap.add_argument("--methods", nargs="+", default=["all"])
    ap.add_argument("--bits", nargs="+", type=int, default=[12, 24, 36, 48])
    ap.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="head seeds averaged per cell"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-utility.md")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for every run, e.g. --set methods.dsh.balance_pairs=false",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = registry.names() if args.methods == ["all"] else args.methods
    base = {"tracking.enabled": False, **parse_overrides(args.overrides)}
    lines = [
        "| features | dataset | float acc | method | "
        + " | ".join(f"{b} bits" for b in args.bits)
        + " | min retention |",
        "|---|---|---|---|" + "---|" * len(args.bits) + "---|",
    ]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for features in args.features:
            for dataset in args.datasets:
                path = embeddings_for(features, dataset, args.root, tmp, base)
                emb = load_embeddings(path)
                params = load_params(REPO / "params.yaml", base)
                rows, _ = float_knn(emb, params.knn)
                f_acc = next(r for r in rows if r["k"] == params.knn.k)["accuracy"]
                for method in methods:
                    cells, worst = [], 1e9
                    for bits in args.bits:
                        try:
                            accs = []
                            for seed in args.seeds:
                                p_seed = load_params(REPO / "params.yaml", {**base, "seed": seed})
                                head, _, _ = train_one(
                                    p_seed,
                                    dataset=dataset,
                                    method_name=method,
                                    bits=bits,
                                    emb=emb,
                                    progress=False,
                                )
                                h_rows, _ = hamming_knn(
                                    emb, encode_splits(head, emb), bits, [params.knn.k]
                                )
                                accs.append(h_rows[0]["accuracy"])
                            acc = float(np.mean(accs))
                            worst = min(worst, acc / f_acc)
                            cells.append(f"{acc:.3f} ({100 * acc / f_acc:.0f}%)")
                        except ValueError as err:  # e.g. ITQ/PCA with bits > embedding dim
                            cells.append(f"n/a: {str(err)[:40]}")
                    kind = "" if registry.get(method).supervised else " (unsup.)"
                    lines.append(
                        f"| {features} (d={emb.dim}) | {dataset} | {f_acc:.3f} | {method}{kind} | "
                        + " | ".join(cells)
                        + f" | {100 * worst:.1f}% |"
                    )
                    print(lines[-1], flush=True)
    total = time.perf_counter() - t_start
    text = (
        "\n".join(lines)
        + f"\n\nHamming KNN (k=7) accuracy on the test split, mean over head seeds {args.seeds}; (x%) = share "
        + f"of the float-KNN accuracy of the same features. Total {total:.0f} s.\n"
        + (f"Overrides: {args.overrides}.\n" if args.overrides else "")
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
