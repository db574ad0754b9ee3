"""The shared synthetic data (pipeline/synthetic.py): seeded, the documented layout and structure."""

from __future__ import annotations

import json

import numpy as np

from pipeline.synthetic import gaussian_clusters, latent_clusters, synthetic_embeddings


def test_synthetic_embeddings_layout_and_seed() -> None:
    a, b = synthetic_embeddings(seed=4), synthetic_embeddings(seed=4)
    assert all(np.array_equal(a.x[s], b.x[s]) for s in a.x)
    assert [len(a.y[s]) for s in ("train", "val", "test")] == [300, 60, 90]
    assert a.y["train"][:5].tolist() == [0, 1, 2, 0, 1]  # classes cycle
    assert json.loads(a.meta["class_names"]) == ["c0", "c1", "c2"]
    multi = synthetic_embeddings(n=(8, 4, 4), multilabel=True)
    # rows 0 and 4 (labels 0 and 1) each gain the classes after 0 and 1; the other rows stay one-hot
    assert multi.y["train"][0].tolist() == [1, 1, 1] and multi.y["train"][4].tolist() == [0, 1, 1]
    assert multi.y["train"][1].tolist() == [0, 1, 0]


def test_gaussian_clusters_share_centers_across_seeds_and_honour_majority() -> None:
    a, b = gaussian_clusters(500, seed=1), gaussian_clusters(500, seed=2)
    for c in range(5):  # same centers (center_seed), different noise: class means agree closely
        ma = a.x[a.y[:, c] == 1].mean(0)
        mb = b.x[b.y[:, c] == 1].mean(0)
        assert float((ma - mb).norm()) < 1.0
    skewed = gaussian_clusters(2000, seed=0, majority=0.8)
    share = float(skewed.y[:, 0].mean())
    assert 0.77 < share < 0.83


def test_latent_clusters_shapes_imbalance_and_separability() -> None:
    data = latent_clusters(n_train=3000, n_val=10, n_test=300, dim=64, n_classes=3, seed=0)
    x, y = data["train"]
    assert x.shape == (3000, 64) and x.dtype == np.float32 and y.dtype == np.int64
    counts = np.bincount(y, minlength=3)
    # weights 1 : 1.5 : 2 (of 4.5), plus 5 % uniform label noise
    expected = 3000 * (0.95 * np.array([1, 1.5, 2]) / 4.5 + 0.05 / 3)
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    # nearest class mean (from train) classifies test far above chance
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    xt, yt = data["test"]
    pred = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == yt).mean() > 0.6
