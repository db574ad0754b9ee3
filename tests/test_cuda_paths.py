"""CUDA paths found by reading (no GPU was at hand): what can be checked on the CPU with mocks
runs by default; the rest is marked ``gpu`` (``python -m pytest -m gpu tests/test_cuda_paths.py``,
skipped without a CUDA device)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from hashers import registry
from hashers.base import EmbeddingSet, HeadSpec
from hashers.trainer import FitConfig, fit, on_cpu
from pipeline import backbones
from pipeline.backbones import BackboneUnavailableError, resolve_precision
from pipeline.synthetic import gaussian_clusters
from privacy._learn import mlp, train_regressor
from tests.conftest import mocked_gpus


def settings() -> types.SimpleNamespace:
    return types.SimpleNamespace(epochs=3, lr=1e-2, weight_decay=0.0, batch_size=8, holdout=0.25)


def regress(seed: int = 3) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    t = (x @ rng.normal(size=(6, 2))).astype(np.float32)
    model = train_regressor(
        mlp(6, 2, (8,)), x, t, loss_fn=torch.nn.functional.mse_loss, settings=settings(), seed=seed
    )
    return model.state_dict()


# --------------------------------------------------------------------------------------------
# on the CPU
# --------------------------------------------------------------------------------------------


def test_training_an_attack_model_seeds_no_gpu_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train_regressor`` ran ``torch.manual_seed`` inside ``fork_rng(devices=[])``: every CUDA
    (and MPS) generator was reseeded with the attack's seed (lazily, even before CUDA starts) and
    never restored, so training an inversion or reconstruction model reset a caller's GPU random
    streams. Only the CPU generator (the model's) is seeded now."""
    seeded: list[object] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(("cuda", s)))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: seeded.append(("mps", s)))
    a, b = regress(), regress()
    assert seeded == []
    assert all(torch.equal(a[k], b[k]) for k in a)  # still seeded: the same model twice


def test_explicit_bf16_is_checked_on_the_backbones_own_gpu() -> None:
    """``precision: bf16`` on ``cuda:1`` asked ``torch.cuda.is_bf16_supported()``, i.e. the
    *current* device (0): a bf16-capable card 0 let a card 1 without bf16 through, and a card 0
    without it refused a capable card 1. ``auto`` was already decided per device."""
    ok = types.SimpleNamespace(major=8, minor=0, name="cc 8.0")
    old = types.SimpleNamespace(major=5, minor=2, name="cc 5.2 (no bf16 at all)")
    for cards, expect_bf16 in (((ok, old), False), ((old, ok), True)):
        with mocked_gpus(dict(enumerate(cards)), bf16_from_major=True):
            card1 = torch.device("cuda", 1)
            if expect_bf16:
                assert resolve_precision("bf16", card1) == "bf16"
            else:
                with pytest.raises(
                    BackboneUnavailableError,
                    match=r"backbone\.precision: bf16 is not supported by this GPU \(cuda:1\)",
                ):
                    resolve_precision("bf16", card1)
            assert resolve_precision("auto", card1) == ("bf16" if expect_bf16 else "fp32")


def test_splits_already_on_the_cpu_are_used_as_given() -> None:
    data = gaussian_clusters(20, seed=0, dim=8, n_classes=2)
    assert on_cpu(data) is data


# --------------------------------------------------------------------------------------------
# on a GPU (python -m pytest -m gpu tests/test_cuda_paths.py)
# --------------------------------------------------------------------------------------------


def spec(dropout: float = 0.0) -> HeadSpec:
    return HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,), dropout=dropout)


def clusters(n: int, seed: int) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed, dim=16, n_classes=3, spread=3.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attack_model_training_leaves_the_cuda_generator_alone() -> None:
    torch.cuda.manual_seed(1234)
    before = torch.cuda.get_rng_state()
    regress(seed=5)
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fits_restore_the_callers_cuda_generator() -> None:
    """fit and dp_fit seed the training device's generator (dropout, DP's secret dropout stream)
    inside ``fork_rng``: the caller's CUDA stream is the same afterwards."""
    from privacy.dp import DPConfig, dp_fit

    train, val = clusters(200, 1), clusters(60, 2)
    cfg = FitConfig(epochs=2, batch_size=32, progress=False, val_queries=60, device="cuda")
    torch.cuda.manual_seed(99)
    before = torch.cuda.get_rng_state()
    fit(registry.build("dsh", spec(dropout=0.2), seed=0), train, val, config=cfg)
    assert torch.equal(torch.cuda.get_rng_state(), before)
    dp_fit(
        registry.build("csq", spec(dropout=0.2), seed=0),
        train,
        val,
        config=cfg,
        dp=DPConfig(noise_multiplier=1.0, accountant="rdp"),
    )
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_splits_given_on_the_gpu_train_like_cpu_splits() -> None:
    """EmbeddingSets holding CUDA tensors failed inside the trainer: class-balanced batches drew
    ``torch.multinomial`` of CUDA row weights with the fit's CPU generator, and the val scores
    called ``.numpy()`` on CUDA labels (DP-SGD's val halves too). They are taken to the CPU first,
    as the trainer keeps every split."""
    from privacy.dp import DPConfig, dp_fit

    train, val = clusters(300, 1), clusters(90, 2)
    gpu = [EmbeddingSet(s.x.cuda(), s.y.cuda()) for s in (train, val)]
    assert on_cpu(gpu[0]).x.device.type == "cpu"
    cfg = FitConfig(
        epochs=3, batch_size=64, progress=False, val_queries=90, class_balance=1.0, device="cuda"
    )
    method = registry.build("dsh", spec(), seed=0)
    result = fit(method, *gpu, config=cfg)
    assert all(p.device.type == "cpu" for p in method.parameters())
    assert result.best_val_accuracy >= 0.8, result.best_val_accuracy
    dp_method = registry.build("csq", spec(), seed=0)
    dp_fit(
        dp_method,
        *gpu,
        config=FitConfig(epochs=2, batch_size=64, progress=False, val_queries=90, device="cuda"),
        dp=DPConfig(noise_multiplier=1.0, accountant="rdp", seed=0),
    )
    assert all(p.device.type == "cpu" for p in dp_method.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explicit_bf16_on_each_real_gpu() -> None:
    for i in range(torch.cuda.device_count()):
        card = torch.device("cuda", i)
        with torch.cuda.device(card):
            supported = torch.cuda.is_bf16_supported()
        if supported:
            assert resolve_precision("bf16", card) == "bf16"
        else:
            with pytest.raises(BackboneUnavailableError):
                resolve_precision("bf16", card)
        assert backbones._bf16_tensor_ok(card) == supported or backbones.native_bf16(card)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_1_is_honoured_by_the_backbone_and_the_trainer() -> None:
    """Nothing of a backbone or a fit on ``cuda:1`` lands on device 0 (the current one)."""
    from pipeline.backbones import load_backbone
    from pipeline.config import BackboneConfig

    torch.cuda.synchronize(0)
    before = torch.cuda.memory_allocated(0)
    bb = load_backbone(
        BackboneConfig(name="tiny-random", image_size=28, device="cpu", precision="fp32"), seed=0
    )
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    cpu = bb.embed_images(images)
    bb.model.to("cuda:1")
    bb.device = torch.device("cuda:1")
    out = bb.embed_images(images)
    assert out.device == torch.device("cuda:1") and torch.allclose(out.cpu(), cpu, atol=1e-3)
    cfg = FitConfig(epochs=2, batch_size=32, progress=False, val_queries=60, device="cuda:1")
    fit(registry.build("dsh", spec(), seed=0), clusters(200, 1), clusters(60, 2), config=cfg)
    assert torch.cuda.memory_allocated(0) == before
