"""Method configs built directly (library use) refuse values params.yaml refuses already.

Before: NaN / inf weights, margins or β trained a non-finite loss that the trainer blamed on
``train.lr``; ``CNNHConfig(cls_weight=nan)`` trained plain CNNH (``nan > 0`` is False); a
non-integer count failed inside torch or ``range``; ``balance_pairs="false"`` was truthy (on).
"""

from __future__ import annotations

import math
import re

import numpy as np
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"memory_bank": "false"}, "memory_bank: 'false' must be True or False"),
        ({"bank_rows": 2.5}, "bank_rows: 2.5 must be an integer"),
    ],
)
def test_memory_bank_options_of_the_wrong_type_are_refused(kwargs: dict, message: str) -> None:
    # "false" was truthy: the bank switched on; 2.5 rows failed inside torch
    with pytest.raises(ValueError, match=re.escape(message)):
        DPSHConfig(**kwargs)
    assert DPSHConfig(memory_bank=True, bank_rows=np.int64(8)).bank_rows == 8


def test_cnnh_names_max_label_sets_when_rare_sets_share_a_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # sets beyond max_label_sets are fitted only against the solved ones: two rare sets can
    # share a code at any length, and the warning said only "increase n_bits"
    import torch

    from hashers import registry
    from hashers.base import EmbeddingSet, HeadSpec

    sets = torch.tensor([[int(b) for b in f"{i:04b}"] for i in range(1, 16)], dtype=torch.float32)
    y = torch.cat([sets, sets[:2].repeat(10, 1)])  # two common sets, 13 rare ones
    train = EmbeddingSet(torch.randn(len(y), 4), y)
    spec = HeadSpec(in_dim=4, n_bits=2, n_classes=4, multilabel=True)
    head = registry.build("cnnh", spec, CNNHConfig(max_label_sets=2), seed=0)
    with caplog.at_level("WARNING", logger="hashers.cnnh"):
        head.on_fit_start(train)
    assert head.dissimilar_min_distance == 0
    assert "raise max_label_sets (now 2; 13 rarer sets were fitted only" in caplog.text
