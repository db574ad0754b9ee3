"""Shared test fixtures: offline, tracking-free environment and the shared MedMNIST files.

Synthetic data lives in the library (:mod:`pipeline.synthetic`), shared with ``bench/``."""

from __future__ import annotations

from pathlib import Path

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
