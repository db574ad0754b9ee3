"""Carving val (or test) from a multi-label train split keeps every label in train and
stratifies by each row's rarest label, as ``data.limit`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.data import carve
from tests.pipeline.sources.source_helpers import data_config, load


def _labels() -> np.ndarray:
    """200 rows, 3 labels: label 0 on rows 0-119, label 1 on rows 100-199, and label 2 (a finding
    seen once) on row 5 only, beside label 0."""
    y = np.zeros((200, 3), dtype=np.uint8)
    y[:120, 0] = 1
    y[100:, 1] = 1
    y[5, 2] = 1
    return y


@pytest.mark.parametrize("what", ["val", "test"])
def test_a_label_seen_once_is_never_carved_out_of_train(what: str) -> None:
    y = _labels()
    for seed in range(60):  # by the first positive label, ~1 seed in 10 carved row 5 away
        kept, carved = carve(y, 0.1, seed=seed, what=what)
        assert len(carved) == 20 and len(kept) == 180
        assert sorted(np.concatenate([kept, carved]).tolist()) == list(range(200))
        assert 5 in kept.tolist()
        assert y[kept].any(axis=0).all()


def test_the_carve_is_stratified_by_the_rarest_label_and_seeded() -> None:
    """Rarest-label strata: rows 0-99 but 5 (label 0 only: 99 rows), rows 100-199 (label 1 is
    rarer than label 0: 100 rows), row 5 (label 2). 180 kept of 200: floor(99 * 0.9) = 89,
    90 and the single row (at least one each); so exactly 10 carved from each of the two big
    strata. (The first positive label made rows 0-119 one stratum: 12 carved there, 8 above.)"""
    y = _labels()
    for seed in range(10):
        kept, carved = carve(y, 0.1, seed=seed)
        assert int((carved < 100).sum()) == 10 and int((carved >= 100).sum()) == 10
        again_kept, again_carved = carve(y, 0.1, seed=seed)
        assert np.array_equal(carved, again_carved) and np.array_equal(kept, again_kept)
    assert not np.array_equal(carve(y, 0.1, seed=0)[1], carve(y, 0.1, seed=1)[1])


def test_a_multilabel_embeddings_file_without_val_loads_for_every_seed(tmp_path: Path) -> None:
    """Seeds 5, 11, 13, 17, 18, 22 and 26 carved the only positive of label 2 into val: the file was
    then refused (val_y has positives in label column 2 that no train row has)."""
    y = _labels()
    g = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        train_x=g.normal(size=(200, 4)).astype(np.float32),
        train_y=y,
        test_x=g.normal(size=(6, 4)).astype(np.float32),
        test_y=y[[0, 1, 100, 101, 150, 151]],
    )
    data = data_config(tmp_path, mine=SourceConfig(kind="embeddings", path=str(path)))
    for seed in range(30):
        emb = load("mine", data, seed=seed)
        assert len(emb.y["val"]) == 20 and len(emb.y["train"]) == 180
        assert int(emb.y["train"][:, 2].sum()) == 1 and int(emb.y["val"][:, 2].sum()) == 0
