"""Seeded synthetic embeddings for tests and benchmarks (one module for both; no real data).

Every generator draws labelled Gaussian clusters, seeded, in a fixed draw order (so a seed gives the
same numbers on every machine and benchmark results stay reproducible):

* :func:`synthetic_embeddings` — an :class:`~pipeline.artifacts.EmbeddingsFile` (the embeddings-file
  layout of the stages: train/val/test, metadata, optional multi-label), for stage tests;
* :func:`gaussian_clusters` — a :class:`~hashers.base.EmbeddingSet` (one-hot labels) of one split,
  optionally imbalanced, for method and trainer tests;
* :func:`latent_clusters` — large, PathMNIST-like splits for benchmarks: class structure in a
  low-dimensional latent subspace mapped into ``dim`` dimensions, isotropic noise, a non-zero mean
  (as DINOv2 features have), mild class imbalance and label noise, generated in chunks so peak
  memory stays near the output's size.
"""

from __future__ import annotations

import json
import math

import numpy as np

from hashers.base import EmbeddingSet
from pipeline.artifacts import SPLITS, EmbeddingsFile


def noisy_centers(g: np.random.Generator, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``centers[labels]`` plus unit Gaussian noise drawn from ``g`` (float64 ``[N, D]``)."""
    return centers[labels] + g.normal(size=(len(labels), centers.shape[1]))


def synthetic_embeddings(
    *,
    n: tuple[int, int, int] = (300, 60, 90),
    dim: int = 32,
    n_classes: int = 3,
    seed: int = 0,
    multilabel: bool = False,
    backbone: str = "tiny-random",
    dataset: str = "syn",
) -> EmbeddingsFile:
    """Separable clusters (centers ``N(0, 4)``) in the embeddings-file layout; ``n`` = train/val/test
    sizes, classes cycle. ``multilabel`` makes every fourth sample multi-hot: it gains each class that
    follows the label of one of those samples (so at least its own next class). ``dataset``: the
    name its metadata records (stages refuse a ``--dataset`` other than it)."""
    g = np.random.default_rng(seed)
    centers = g.normal(size=(n_classes, dim)) * 2.0
    x, y = {}, {}
    for split, count in zip(SPLITS, n, strict=True):
        labels = np.arange(count) % n_classes
        x[split] = noisy_centers(g, centers, labels).astype(np.float32)
        if multilabel:
            multi = np.eye(n_classes, dtype=np.uint8)[labels]
            multi[::4, (labels[::4] + 1) % n_classes] = 1
            y[split] = multi
        else:
            y[split] = labels.astype(np.int64)
    meta = {
        "dataset": dataset,
        "backbone": backbone,
        "pooling": "cls",
        "revision": "test",
        "task": "multi-label" if multilabel else "multi-class",
        "class_names": json.dumps([f"c{i}" for i in range(n_classes)]),
    }
    return EmbeddingsFile(x=x, y=y, meta=meta)


def gaussian_clusters(
    n: int,
    *,
    seed: int,
    dim: int = 32,
    n_classes: int = 5,
    spread: float = 1.5,
    majority: float | None = None,
    center_seed: int = 123,
) -> EmbeddingSet:
    """Labelled clusters as an :class:`EmbeddingSet` (one-hot labels).

    Class centers are ``N(0, spread²)`` draws from ``center_seed`` (shared by every split), samples
    add unit noise drawn from ``seed``. Classes cycle (balanced) unless ``majority`` puts that share
    of the samples in class 0 and spreads the rest over the others.
    """
    if majority is not None and (not 0.0 <= majority <= 1.0 or n_classes < 2):
        raise ValueError(
            f"majority={majority!r} with n_classes={n_classes}: the share of class 0 must lie in "
            "[0, 1], and the rest needs at least one other class (n_classes >= 2)"
        )
    g = np.random.default_rng(seed)
    centers = np.random.default_rng(center_seed).normal(size=(n_classes, dim)) * spread
    if majority is None:
        y = np.arange(n) % n_classes
    else:
        y = np.where(g.random(n) < majority, 0, 1 + g.integers(0, n_classes - 1, n))
    x = noisy_centers(g, centers, y)
    return EmbeddingSet.from_numpy(x.astype(np.float32), np.eye(n_classes, dtype=np.float32)[y])


def _project(z: np.ndarray, basis: np.ndarray, *, rows: int = 256) -> np.ndarray:
    """``z @ basis`` (float32) summed over the latent axis in one fixed order, with elementwise
    numpy operations (each correctly rounded), so the result is the same on every machine. A BLAS
    matmul is not: OpenBLAS picks its kernel per CPU (e.g. Haswell vs SkylakeX), and they round
    differently (half the entries differed by up to 1 ulp)."""
    out = np.empty((len(z), basis.shape[1]), dtype=np.float32)
    for i in range(0, len(z), rows):  # row blocks that stay in cache across the latent terms
        block = z[i : i + rows]
        acc = block[:, :1] * basis[0]
        for k in range(1, basis.shape[0]):
            acc += block[:, k : k + 1] * basis[k]
        out[i : i + rows] = acc
    return out


def latent_clusters(
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    dim: int,
    n_classes: int,
    seed: int,
    latent: int = 32,
    separation: float = 0.7,
    noise: float = 0.6,
    label_noise: float = 0.05,
    chunk: int = 10_000,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (x float32 [n, dim], y int64 [n])}``: clustered, class-separable but noisy.

    Class weights rise linearly from 1 to 2; ``label_noise`` of the labels are redrawn uniformly.
    The defaults put float KNN (k=7) near 90 % test accuracy, close to DINOv2 on PathMNIST.
    ``chunk`` bounds peak memory but is part of the data's definition: the draws of each chunk
    are interleaved, so another ``chunk`` gives other numbers for the same seed (every published
    benchmark uses the default).
    """
    g = np.random.default_rng(seed)
    weights = np.linspace(1.0, 2.0, n_classes)
    weights /= weights.sum()
    basis = (g.standard_normal((latent, dim)) / math.sqrt(latent)).astype(np.float32)
    means = (g.standard_normal((n_classes, latent)) * separation).astype(np.float32)
    offset = (g.standard_normal(dim) * 0.5).astype(np.float32)
    out = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True):
        y = g.choice(n_classes, size=n, p=weights)
        x = np.empty((n, dim), dtype=np.float32)
        for i in range(0, n, chunk):  # chunked: peak memory stays near the output's size
            yc = y[i : i + chunk]
            z = means[yc] + g.standard_normal((len(yc), latent), dtype=np.float32)
            x[i : i + chunk] = (
                _project(z, basis)
                + noise * g.standard_normal((len(yc), dim), dtype=np.float32)
                + offset
            )
        flip = g.random(n) < label_noise
        y[flip] = g.integers(n_classes, size=int(flip.sum()))
        out[split] = (x, y.astype(np.int64))
    return out
