"""The shared synthetic data (pipeline/synthetic.py): seeded, the documented layout and structure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.synthetic import gaussian_clusters, latent_clusters, synthetic_embeddings
from tests.conftest import REPO


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


def _openblas_dynamic() -> bool:
    deps = np.show_config(mode="dicts").get("Build Dependencies", {})
    blas = deps.get("blas", {})
    return "openblas" in str(blas.get("name", "")).lower() and "DYNAMIC_ARCH" in str(
        blas.get("openblas configuration", "")
    )


@pytest.mark.skipif(not _openblas_dynamic(), reason="needs numpy on OpenBLAS with DYNAMIC_ARCH")
def test_latent_clusters_are_the_same_whatever_blas_kernel_the_cpu_gets() -> None:
    """The module's claim, a seed gives the same numbers on every machine: OpenBLAS picks its
    kernel per CPU (OPENBLAS_CORETYPE forces one); a BLAS matmul for the latent projection gave
    other float32 numbers with the Prescott (SSE3) kernel than with this CPU's own (half the
    entries, by 1 ulp)."""
    code = (
        "import hashlib; from pipeline.synthetic import latent_clusters; "
        "d = latent_clusters(n_train=300, n_val=10, n_test=10, dim=64, n_classes=3, seed=0); "
        "print(hashlib.sha256(d['train'][0].tobytes()).hexdigest())"
    )
    digests = set()
    for core in ("", "Prescott"):  # this CPU's kernel, and the oldest x86-64 one
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests
    # and it is the projection it claims to be: z @ basis (+ noise, offset), float32 accurate
    x = latent_clusters(n_train=50, n_val=1, n_test=1, dim=16, n_classes=2, seed=1, noise=0.0)
    g = np.random.default_rng(1)
    basis = (g.standard_normal((32, 16)) / np.sqrt(32)).astype(np.float32)
    means = (g.standard_normal((2, 32)) * 0.7).astype(np.float32)
    offset = (g.standard_normal(16) * 0.5).astype(np.float32)
    y = g.choice(2, size=50, p=np.linspace(1.0, 2.0, 2) / 3.0)
    z = means[y] + g.standard_normal((50, 32), dtype=np.float32)
    want = z.astype(np.float64) @ basis.astype(np.float64) + offset
    np.testing.assert_allclose(x["train"][0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("majority", "n_classes"), [(1.5, 5), (-0.1, 5), (0.9, 1)])
def test_gaussian_clusters_refuses_a_majority_share_it_cannot_draw(
    majority: float, n_classes: int
) -> None:
    # 1.5 / -0.1 were accepted (every sample class 0 / none); n_classes=1 failed in numpy
    with pytest.raises(ValueError, match=rf"majority={majority!r} with n_classes={n_classes}"):
        gaussian_clusters(20, seed=0, majority=majority, n_classes=n_classes)
    # the ends of the range: every sample in class 0, or none
    assert gaussian_clusters(20, seed=0, majority=1.0, n_classes=3).y.sum(0).tolist() == [20, 0, 0]
    assert gaussian_clusters(20, seed=0, majority=0.0, n_classes=3).y[:, 0].sum() == 0
