"""CUDA paths of the training loop (``-m gpu``; deselected by default, skipped without a GPU).

Every registered method trains on the GPU and hands back a CPU module whose codes are as good as a
CPU-trained one's; memory banks and discrete-step buffers follow the module across devices.
"""

from __future__ import annotations

import pytest
import torch

from hashers import registry
from hashers.base import EmbeddingSet, HeadSpec
from hashers.dpsh import DPSHConfig
from hashers.trainer import FitConfig, fit, resolve_device
from pipeline.synthetic import gaussian_clusters

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def clusters(n: int, *, seed: int) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed)


def spec() -> HeadSpec:
    return HeadSpec(in_dim=32, n_bits=16, n_classes=5, hidden_dims=(64,), dropout=0.0)


def test_auto_device_picks_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("name", registry.names())
def test_every_method_trains_on_cuda_and_returns_to_cpu(name: str) -> None:
    train, val = clusters(600, seed=1), clusters(150, seed=2)
    method = registry.build(name, spec(), seed=0)
    cfg = FitConfig(epochs=8, batch_size=128, patience=8, progress=False, device="cuda")
    result = fit(method, train, val, config=cfg)
    assert all(p.device.type == "cpu" for p in method.parameters())
    assert all(b.device.type == "cpu" for b in method.buffers())
    codes = method.encode(val.x)
    assert codes.dtype == torch.bool and codes.shape == (150, 16)
    assert result.best_val_accuracy >= 0.85, result.best_val_accuracy  # separable clusters
    if registry.get(name).trainable:
        assert result.peak_memory_mb > 0  # CUDA peak allocation is measured


def test_memory_bank_lives_on_cuda_during_training_and_round_trips() -> None:
    train, val = clusters(300, seed=1), clusters(100, seed=2)
    method = registry.build("dpsh", spec(), DPSHConfig(memory_bank=True), seed=0)
    devices: list[str] = []
    original = method.compute_loss

    def spy(u, y, idx):
        devices.append(method.bank.codes.device.type)
        return original(u, y, idx)

    method.compute_loss = spy  # type: ignore[method-assign]
    fit(
        method, train, val, config=FitConfig(epochs=2, batch_size=64, progress=False, device="cuda")
    )
    assert devices and set(devices) == {"cuda"}
    assert method.bank.codes.device.type == "cpu" and bool(method.bank.filled.all())
    fresh = registry.build("dpsh", spec(), DPSHConfig(memory_bank=True), seed=5)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.encode(val.x), method.encode(val.x))
