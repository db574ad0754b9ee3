"""FitConfig refuses values of the wrong type or range with a HashingError naming the key (library
use; the pipeline's params checks already refuse them), and takes numpy integers as Python ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hashers import registry
from hashers.base import HashingError, HeadSpec
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # before: TypeError inside range() / torch.randperm slicing, naming no setting
        ({"epochs": 2.5}, r"epochs=2\.5 must be an integer"),
        ({"batch_size": 2.5}, r"batch_size=2\.5 must be an integer"),
        ({"val_queries": 2.5}, r"val_queries=2\.5 must be an integer"),
        # before: accepted (a float epoch budget; True read as one epoch)
        ({"max_steps": 2.5}, r"max_steps=2\.5 must be an integer"),
        ({"epochs": True}, r"epochs=True must be an integer"),
        # before: RuntimeError / ValueError from torch's manual_seed
        ({"seed": 1.5}, r"seed=1\.5 must be an integer"),
        ({"seed": 2**64}, r"seed=18446744073709551616: use an integer from 0 to 2\*\*64 - 1"),
        # before: accepted, and trained the head of seed 2**64 - 1
        ({"seed": -1}, r"seed=-1: use an integer from 0 to 2\*\*64 - 1"),
        # before: AdamW's ValueError "Invalid learning rate: -1.0"; lr=inf trained a NaN epoch
        ({"lr": -1.0}, r"lr=-1\.0: use a finite learning rate > 0"),
        ({"lr": float("nan")}, r"lr=nan: use a finite learning rate > 0"),
        ({"lr": float("inf")}, r"lr=inf: use a finite learning rate > 0"),
        ({"lr": "1e-3"}, r"lr='1e-3' must be a number"),
        ({"weight_decay": -1.0}, r"weight_decay=-1\.0: use a finite weight decay >= 0"),
        # before: trained an epoch, then failed in the KNN stage's check
        ({"k": 0}, r"k=0: the KNN model selection needs k >= 1"),
        ({"class_balance": "0.5"}, r"class_balance='0\.5' must be a number"),
    ],
)
def test_fit_config_refuses_values_of_the_wrong_type_or_range(bad: dict, message: str) -> None:
    with pytest.raises(HashingError, match=message):
        FitConfig(**bad)


def test_fit_config_takes_numpy_integers_and_trains_as_with_python_ones() -> None:
    """A numpy seed (e.g. drawn from a numpy generator for a sweep) failed inside the fit with
    torch's 'an integer is required'; it now trains exactly the head of the same Python seed."""
    cfg_np = FitConfig(
        epochs=np.int64(2), batch_size=np.int32(16), seed=np.int64(3), k=np.int64(3), progress=False
    )
    train = gaussian_clusters(60, seed=1, dim=8, n_classes=2)
    val = gaussian_clusters(30, seed=2, dim=8, n_classes=2)
    weights = []
    for cfg in (cfg_np, FitConfig(epochs=2, batch_size=16, seed=3, k=3, progress=False)):
        spec = HeadSpec(in_dim=8, n_bits=8, n_classes=2, hidden_dims=(8,))
        method = registry.build("dpsh", spec, seed=0)
        fit(method, train, val, config=cfg)
        weights.append(torch.cat([p.detach().flatten() for p in method.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert cfg_np.seed == 3 and type(cfg_np.seed) is int and type(cfg_np.epochs) is int
    assert FitConfig(seed=2**64 - 1).seed == 2**64 - 1  # the largest seed torch takes


def test_an_empty_training_split_is_named_not_called_a_single_class() -> None:
    import torch

    from hashers import registry
    from hashers.base import EmbeddingSet, HashingError, HeadSpec
    from hashers.trainer import FitConfig, fit

    spec = HeadSpec(in_dim=4, n_bits=8, n_classes=2)
    head = registry.build("dpsh", spec, seed=0)
    empty = EmbeddingSet(torch.zeros(0, 4), torch.zeros(0, 2))
    val = EmbeddingSet(torch.randn(6, 4), torch.eye(2)[torch.tensor([0, 1] * 3)])
    with pytest.raises(HashingError, match=r"^dpsh: the training split holds no rows"):
        fit(head, empty, val, config=FitConfig(epochs=1, progress=False, k=1))
