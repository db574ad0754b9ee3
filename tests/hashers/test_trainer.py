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
