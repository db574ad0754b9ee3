"""The learned attacks' model and training settings (privacy/_learn.py): settings that cannot
train an attack model are refused, naming the value, instead of reporting code-blind numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_records

from privacy._learn import mlp, train_regressor
from privacy.base import FloatRelease
from privacy.errors import PrivacyError
from privacy.inversion import Inversion, InversionConfig


@pytest.fixture(scope="module")
def recs():
    return make_records(n=(60, 120, 60), dim=16)


def test_a_hidden_width_of_zero_is_refused_not_a_constant_model(recs) -> None:
    """hidden=(0,) left a model whose output is its last bias: on the float control (the leaky
    reference) inversion read code-blind (centred cosine 0.005, re-identification at chance),
    so every head's inversion leakage share became undefined. A linear model (hidden=()) and a
    real width still fit, and the float control bites."""
    with pytest.raises(PrivacyError, match=r"hidden\[0\]=0: every hidden width .* integer >= 1"):
        Inversion(FloatRelease(), InversionConfig(hidden=(0,), epochs=5)).fit(recs["val"])
    for bad in ((64, -1), (2.5,), (True,)):
        with pytest.raises(PrivacyError, match=r"hidden\[\d\]=.*every hidden width"):
            mlp(4, 4, bad)
    with pytest.raises(PrivacyError, match=r"dropout=1.0: .* in \[0, 1\)"):
        mlp(4, 4, (8,), dropout=1.0)
    for hidden in ((), (64,)):
        out = (
            Inversion(FloatRelease(), InversionConfig(hidden=hidden, epochs=60, lr=1e-2))
            .fit(recs["val"])
            .run({"test": recs["test"]})
        )
        # the floats are a linear function of themselves: the reconstruction is near exact
        assert out["test/cosine_centered"] >= 0.8 > out["test/cosine_centered_baseline"] + 0.5


def _settings(**change):
    return dataclasses.replace(InversionConfig(epochs=2, batch_size=8), **change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, r"batch_size=0: .* integer >= 1"),
        ({"batch_size": -4}, r"batch_size=-4: .* integer >= 1"),
        ({"lr": float("inf")}, r"lr=inf: .* finite number > 0"),
        ({"lr": -1e-3}, r"lr=-0.001: .* finite number > 0"),
        ({"lr": 0.0}, r"lr=0.0: .* finite number > 0"),
        ({"weight_decay": float("nan")}, r"weight_decay=nan: .* finite number >= 0"),
        ({"weight_decay": -1.0}, r"weight_decay=-1.0: .* finite number >= 0"),
        ({"epochs": 2.5}, r"epochs=2.5: .* whole number of epochs >= 1"),
    ],
)
def test_training_settings_that_cannot_train_are_refused(change, message) -> None:
    """batch_size 0 (or -4) trained on batches of one without a word; lr = inf made every weight
    NaN (NaN attack numbers); lr <= 0 and a negative weight decay were torch ValueErrors naming
    no setting; epochs 2.5 a TypeError from range()."""
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with pytest.raises(PrivacyError, match=message):
        train_regressor(
            mlp(4, 4, (8,)),
            x,
            x,
            loss_fn=torch.nn.functional.mse_loss,
            settings=_settings(**change),
            seed=0,
        )


def test_batch_size_one_is_the_batch_size_one() -> None:
    """The rule stays: batch size 1 is allowed, and a batch size beyond the rows is the rows."""
    x = np.random.default_rng(1).normal(size=(12, 3)).astype(np.float32)

    def fit(bs: int) -> list[np.ndarray]:
        model = train_regressor(
            mlp(3, 3, (4,)),
            x,
            x,
            loss_fn=torch.nn.functional.mse_loss,
            settings=_settings(batch_size=bs, holdout=0.0),
            seed=3,
        )
        return [p.detach().numpy().copy() for p in model.parameters()]

    one, all_rows, beyond = fit(1), fit(12), fit(500)
    assert all(np.array_equal(a, b) for a, b in zip(all_rows, beyond, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(one, all_rows, strict=True))


@pytest.mark.parametrize(("key", "value"), [("hidden", 0), ("channels", 0), ("hidden", 2.5)])
def test_a_reconstruction_decoder_without_width_is_refused(key: str, value: object) -> None:
    # hidden=0 gave a decoder whose output ignores its input (every release read code-blind);
    # channels=0 a reshape RuntimeError inside the first forward pass
    import torch

    from privacy.reconstruction import Decoder, ReconstructionConfig

    with pytest.raises(PrivacyError, match=rf"reconstruction: {key}={value!r} must be an integer"):
        ReconstructionConfig(**{key: value})
    constant = Decoder(4, (1, 8, 8), hidden=0, channels=8)  # what hidden=0 used to build
    with torch.no_grad():
        a, b = constant(torch.zeros(1, 4)), constant(torch.full((1, 4), 100.0))
    assert torch.equal(a, b)  # the same image whatever the features: why it is refused
