"""Synthetic attack scenarios: leaky, blind and hand-sized releases over Gaussian class clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy.base import CodeRelease, Records


def make_records(
    *, n=(300, 150, 150), dim=64, n_classes=3, seed=0, images=False, spread=1.0
) -> dict[str, Records]:
    """train/val/test Records: class centers (std ``spread``) + unit per-record variation; optional
    8x8 images that are a fixed linear function of the embedding (so they can be decoded)."""
    g = np.random.default_rng(seed)
    centers = g.normal(size=(n_classes, dim)) * spread
    pix = g.normal(size=(dim, 64)) / np.sqrt(dim)
    out = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        y = np.arange(count) % n_classes
        x = (centers[y] + g.normal(size=(count, dim))).astype(np.float32)
        img = None
        if images:
            img = np.clip(128 + 40 * (x @ pix), 0, 255).astype(np.uint8).reshape(count, 8, 8)
        out[split] = Records(
            split=split,
            index=np.arange(count),
            x=x,
            y=y.astype(np.int64),
            y_multihot=np.eye(n_classes, dtype=np.float32)[y],
            images=img,
        )
    return out


def lsh_release(train_x: np.ndarray, n_bits: int, seed: int = 0) -> CodeRelease:
    """Centred random hyperplanes (the project's LSH head) fitted on train."""
    from hashers import registry
    from hashers.base import EmbeddingSet, HeadSpec

    spec = HeadSpec(in_dim=train_x.shape[1], n_bits=n_bits, n_classes=1)
    method = registry.build("lsh", spec, seed=seed)
    method.on_fit_start(EmbeddingSet.from_numpy(train_x, np.ones((len(train_x), 1))))
    return CodeRelease.from_head(method)


def linear_release(dim: int, n_bits: int, seed: int = 0) -> CodeRelease:
    """Codes a linear function of the embeddings (sign of a fixed random projection, no centring)."""
    w = np.random.default_rng(seed).normal(size=(dim, n_bits)).astype(np.float32)
    return CodeRelease(lambda x: (x @ w) > 0, n_bits)


def blind_release(n_bits: int, seed: int = 0) -> CodeRelease:
    """Codes drawn independently of the data: each call draws fresh random bits per record."""
    rng = np.random.default_rng(seed)
    return CodeRelease(lambda x: rng.random((len(x), n_bits)) < 0.5, n_bits)


@pytest.fixture(autouse=True)
def _few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
