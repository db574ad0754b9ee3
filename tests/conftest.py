"""Shared test fixtures: offline, tracking-free environment and the shared MedMNIST files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, no telemetry, no tracking store in the repo unless a test opts in."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HASHAUDIT_TRACKING", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def one_thread():
    """Tiny heads train faster on one torch thread, and far faster on a busy shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_medmnist() -> Path:
    if not (SHARED_MEDMNIST / "breastmnist.npz").is_file():
        pytest.skip(f"shared MedMNIST files not found at {SHARED_MEDMNIST}")
    return SHARED_MEDMNIST


def synthetic_embeddings(
    *,
    n: tuple[int, int, int] = (300, 60, 90),
    dim: int = 32,
    n_classes: int = 3,
    seed: int = 0,
    multilabel: bool = False,
    backbone: str = "tiny-random",
):
    """Separable Gaussian clusters in the embeddings-file layout (pipeline.artifacts.Embeddings)."""
    from pipeline.artifacts import Embeddings

    g = np.random.default_rng(seed)
    centers = g.normal(size=(n_classes, dim)) * 2.0
    x, y = {}, {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        labels = np.arange(count) % n_classes
        x[split] = (centers[labels] + g.normal(size=(count, dim))).astype(np.float32)
        if multilabel:
            multi = np.eye(n_classes, dtype=np.uint8)[labels]
            multi[::4, (labels[::4] + 1) % n_classes] = 1
            y[split] = multi
        else:
            y[split] = labels.astype(np.int64)
    meta = {
        "dataset": "synthetic",
        "backbone": backbone,
        "pooling": "cls",
        "revision": "test",
        "task": "multi-label" if multilabel else "multi-class",
        "class_names": str([f"c{i}" for i in range(n_classes)]).replace("'", '"'),
    }
    return Embeddings(x=x, y=y, meta=meta)


def gaussian_clusters(
    n: int,
    *,
    seed: int,
    dim: int = 32,
    n_classes: int = 5,
    spread: float = 1.5,
    majority: float | None = None,
    center_seed: int = 123,
):
    """Labelled Gaussian clusters as a :class:`hashers.base.EmbeddingSet` (one-hot labels).

    Class centers are ``N(0, spread²)`` draws from ``center_seed`` (shared by every split), samples
    add unit noise drawn from ``seed``. Classes cycle (balanced) unless ``majority`` puts that share
    of the samples in class 0 and spreads the rest over the others.
    """
    from hashers.base import EmbeddingSet

    g = np.random.default_rng(seed)
    centers = np.random.default_rng(center_seed).normal(size=(n_classes, dim)) * spread
    if majority is None:
        y = np.arange(n) % n_classes
    else:
        y = np.where(g.random(n) < majority, 0, 1 + g.integers(0, n_classes - 1, n))
    x = centers[y] + g.normal(size=(n, dim))
    return EmbeddingSet.from_numpy(x.astype(np.float32), np.eye(n_classes, dtype=np.float32)[y])
