"""Method configs built directly (library use) refuse values params.yaml refuses already.

Before: NaN / inf weights, margins or β trained a non-finite loss that the trainer blamed on
``train.lr``; ``CNNHConfig(cls_weight=nan)`` trained plain CNNH (``nan > 0`` is False); a
non-integer count failed inside torch or ``range``; ``balance_pairs="false"`` was truthy (on).
"""

from __future__ import annotations

import math

import pytest

from hashers.cnnh import CNNHConfig
from hashers.dhn import DHNConfig
from hashers.dnnh import DNNHConfig
from hashers.dpsh import DPSHConfig
from hashers.dsh import DSHConfig
from hashers.dshgan import DSHGANConfig
from hashers.hashnet import HashNetConfig

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (DSHConfig, "alpha", NAN),
        (DSHConfig, "margin_per_bit", INF),
        (DPSHConfig, "eta", NAN),
        (DHNConfig, "lam", INF),
        (DHNConfig, "logit_scale", NAN),
        (HashNetConfig, "alpha", NAN),
        (HashNetConfig, "beta0", INF),
        (HashNetConfig, "gamma", INF),
        (HashNetConfig, "power", NAN),
        (CNNHConfig, "cls_weight", NAN),
        (DNNHConfig, "margin", NAN),
        (DNNHConfig, "margin", INF),
        (DSHGANConfig, "margin", INF),
        (DSHGANConfig, "cls_weight", NAN),
        (DSHGANConfig, "real_triplet_weight", INF),
        (DSHGANConfig, "gan_lr", INF),
        (DSHGANConfig, "margin", "1.0"),
    ],
)
def test_a_non_finite_number_is_refused_naming_the_field(cls: type, field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: .* must be a finite number$"):
        cls(**{field: value})


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (HashNetConfig, "iterations"),
        (CNNHConfig, "sweeps"),
        (CNNHConfig, "restarts"),
        (CNNHConfig, "max_label_sets"),
        (DNNHConfig, "slice_dim"),
        (DNNHConfig, "triplets_per_anchor"),
        (DSHGANConfig, "triplets_per_anchor"),
        (DSHGANConfig, "noise_dim"),
        (DSHGANConfig, "gan_hidden"),
    ],
)
def test_a_count_that_is_not_an_integer_is_refused(cls: type, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: 2.5 must be an integer$"):
        cls(**{field: 2.5})
    with pytest.raises(ValueError, match=rf"^{field}: True must be an integer$"):
        cls(**{field: True})


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (DSHConfig, "balance_pairs"),
        (DPSHConfig, "balance_pairs"),
        (HashNetConfig, "balance_pairs"),
        (CNNHConfig, "class_balanced"),
    ],
)
def test_a_string_flag_is_refused_not_read_as_true(cls: type, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: 'false' must be True or False$"):
        cls(**{field: "false"})


def test_valid_values_and_the_defaults_still_pass() -> None:
    # the paper defaults, integers given as floats' exact counterparts, and alpha=None (10 / K)
    assert HashNetConfig().alpha is None and HashNetConfig(alpha=0.5, iterations=200).alpha == 0.5
    assert CNNHConfig(cls_weight=1, sweeps=3).sweeps == 3
    assert DSHConfig(alpha=0, balance_pairs=False).alpha == 0
    assert DSHGANConfig(gan_beta1=0.0).gan_beta1 == 0.0
    for cls in (
        DSHConfig,
        DPSHConfig,
        DHNConfig,
        HashNetConfig,
        CNNHConfig,
        DNNHConfig,
        DSHGANConfig,
    ):
        cls()
