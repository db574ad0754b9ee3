"""Helpers shared by the source tests: a data block of sources and one-call loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import sources
from pipeline.config import DataConfig, SourceConfig


def data_config(root: Path | str, **sources: SourceConfig) -> DataConfig:
    sources = sources or {
        "breastmnist": SourceConfig(kind="medmnist"),
        "retinamnist": SourceConfig(kind="medmnist"),
    }
    return DataConfig(
        root=str(root), download=False, datasets=(next(iter(sources)),), sources=sources
    )


def load(name: str, data: DataConfig, *, seed: int = 0):
    return sources.load(name, data.source(name), data, seed=seed)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the datasets cache (imagefolder builds) out of the user's home."""
    import datasets

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache
