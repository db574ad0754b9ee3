"""CUDA path of DP-SGD heads (``-m gpu``; deselected by default, skipped without a GPU).

The per-sample gradients, clipping, noise and Poisson batches run on the GPU; the head comes back on
the CPU with its saved keys unchanged, and ε is accounted exactly as on the CPU (the accountant does
not depend on the device).
"""

from __future__ import annotations

import pytest
import torch

from hashers import registry
from hashers.base import HeadSpec
from hashers.trainer import FitConfig
from pipeline.synthetic import gaussian_clusters
from privacy.dp import DPConfig, dp_fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["csq", "tcl", "cnnh"])
def test_dp_heads_train_on_cuda_and_account_like_the_cpu(name: str) -> None:
    train = gaussian_clusters(400, seed=1, dim=16, n_classes=3, spread=3.0)
    val = gaussian_clusters(100, seed=2, dim=16, n_classes=3, spread=3.0)
    spec = HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,), dropout=0.0)
    dp = DPConfig(noise_multiplier=0.8, accountant="rdp")
    reports = {}
    for device in ("cuda", "cpu"):
        method = registry.build(name, spec, seed=0)
        keys = set(method.state_dict())
        cfg = FitConfig(epochs=4, batch_size=64, progress=False, val_queries=100, device=device)
        result, reports[device] = dp_fit(method, train, val, config=cfg, dp=dp)
        assert all(p.device.type == "cpu" for p in method.parameters())
        assert set(method.state_dict()) == keys
        if device == "cuda":
            assert result.best_val_accuracy >= 0.8, result.best_val_accuracy  # separable clusters
    assert reports["cuda"].steps == reports["cpu"].steps
    assert reports["cuda"].epsilon == pytest.approx(reports["cpu"].epsilon)
