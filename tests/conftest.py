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


def mocked_gpus(cards: dict, *, bf16_from_major: bool = False):
    """A context that makes torch see the GPUs ``cards`` (``{index: SimpleNamespace(major, minor,
    name)}``, current device 0, not ROCm); with ``bf16_from_major`` a bf16 tensor can be made on a
    card of compute capability 8 or more. For CPU tests of device-dependent decisions."""
    import contextlib
    from unittest import mock

    import torch

    def card(d, t=cards):
        return t[torch.cuda._get_device_index(d, optional=True)]

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch("torch.cuda.is_available", return_value=True))
    stack.enter_context(mock.patch("torch.cuda.device_count", return_value=len(cards)))
    stack.enter_context(mock.patch("torch.cuda.current_device", return_value=0))
    stack.enter_context(mock.patch("torch.cuda.get_device_properties", side_effect=card))
    if bf16_from_major:
        stack.enter_context(
            mock.patch(
                "torch.cuda._check_bf16_tensor_supported", side_effect=lambda d: card(d).major >= 8
            )
        )
    stack.enter_context(mock.patch.object(torch.version, "hip", None))
    return stack
