"""The training loop's selection scores, hand-computed, and its configuration checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hashers.base import EmbeddingSet, HashingError, HashingMethod, HeadSpec
from hashers.trainer import FitConfig, val_scores


@dataclass(frozen=True, kw_only=True)
class _NoConfig:
    pass


class _Identity(HashingMethod):
    """Identity 'head' (test stub, 2024): codes are the signs of the inputs. Deviations: none."""

    name = "identity-stub"
    Config = _NoConfig

    def build_head(self) -> nn.Module:
        return nn.Identity()

    def compute_loss(self, u, y, idx):  # pragma: no cover - unused
        return {"loss": u.sum() * 0}


def test_val_scores_hand_computed() -> None:
    # database codes (8 bits): two of class 0 at the query's code, one of class 1 one bit away
    db_x = torch.tensor([[1.0] * 8, [1.0] * 8, [-1.0] + [1.0] * 7])
    db_y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    val_x = torch.tensor([[1.0] * 8, [-1.0] + [1.0] * 7])
    val_y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    method = _Identity(HeadSpec(in_dim=8, n_bits=8, n_classes=2))
    s = val_scores(method, EmbeddingSet(db_x, db_y), EmbeddingSet(val_x, val_y), k=2)
    # query 0: nearest two are both class 0 -> correct, share 1.0
    # query 1: nearest is the class-1 item (d=0), then two class-0 items tie at d=1 sharing 1 vote
    #          -> votes class1 = 1, class0 = 1 -> tie goes to class 0 (wrong), share 0.5
    assert s["val_accuracy"] == pytest.approx(0.5)
    assert s["val_soft_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_selection_must_be_known() -> None:
    with pytest.raises(HashingError, match="selection='loss'"):
        FitConfig(selection="loss")


def test_step_budget_caps_epochs_hand_computed() -> None:
    cfg = FitConfig(epochs=60, batch_size=256, max_steps=2000)
    assert cfg.epoch_budget(90_000) == 5  # ceil(90000 / 256) = 352 steps; 2000 // 352 = 5
    assert (
        FitConfig(epochs=60, batch_size=256, max_steps=1200).epoch_budget(89_996) == 3
    )  # PathMNIST
    assert cfg.epoch_budget(546) == 60  # 3 steps per epoch: the budget never binds
    assert cfg.epoch_budget(10_000_000) == 1  # one epoch is over budget: still one pass
    assert FitConfig(epochs=60, batch_size=256).epoch_budget(10_000_000) == 60  # no budget
    # a lone last row is folded away: 513 rows at batch 256 are 2 steps, not 3
    assert FitConfig(epochs=60, batch_size=256, max_steps=4).epoch_budget(513) == 2
    with pytest.raises(HashingError, match="max_steps=0"):
        FitConfig(max_steps=0)


def test_fit_runs_the_budgeted_epochs_and_schedules_on_them() -> None:
    from hashers.trainer import fit

    seen: list[tuple[int, int]] = []

    class _Recorder(HashingMethod):
        """Linear head (test stub, 2024) recording its epoch schedule. Deviations: none."""

        name = "recorder-stub"
        Config = _NoConfig

        def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
            seen.append((epoch, n_epochs))

        def compute_loss(self, u, y, idx):
            return {"loss": (u - 1).pow(2).mean()}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 4, generator=g)
    y = torch.eye(2)[torch.arange(100) % 2]
    data = EmbeddingSet(x, y)
    method = _Recorder(HeadSpec(in_dim=4, n_bits=8, n_classes=2, hidden_dims=(8,)))
    cfg = FitConfig(epochs=10, batch_size=10, max_steps=25, patience=50, progress=False)
    result = fit(method, data, data, config=cfg)
    assert result.epochs_run == 2  # 10 steps per epoch, 25 // 10 = 2
    assert seen == [(0, 2), (1, 2)]  # continuation schedules see the budgeted epoch count


def test_cpu_training_runs_deterministic_kernels_and_restores_the_setting() -> None:
    from hashers.trainer import fit

    flags: list[bool] = []

    class _Spy(HashingMethod):
        """Linear head (test stub, 2024) recording torch's determinism flag. Deviations: none."""

        name = "spy-stub"
        Config = _NoConfig

        def compute_loss(self, u, y, idx):
            flags.append(torch.are_deterministic_algorithms_enabled())
            return {"loss": (u[idx.argsort()] - 1).pow(2).mean()}  # indexed: index_put_ backward

    data = EmbeddingSet(torch.randn(40, 4), torch.eye(2)[torch.arange(40) % 2])
    assert not torch.are_deterministic_algorithms_enabled()
    method = _Spy(HeadSpec(in_dim=4, n_bits=8, n_classes=2, hidden_dims=(8,)))
    fit(method, data, data, config=FitConfig(epochs=2, batch_size=10, progress=False))
    assert flags and all(flags)
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the caller
