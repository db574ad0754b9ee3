"""DP-SGD settings (privacy/dp.py): an infinite clipping norm or σ is refused up front (library
callers; params.yaml already refuses non-finite numbers)."""

from __future__ import annotations

import math

import pytest

from privacy.dp import DPConfig
from privacy.errors import PrivacyError


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # C = ∞: the noise σ·C is infinite, every weight NaN after the first step; it trained an
        # epoch and then blamed dp.lr ("lower dp.lr or dp.max_grad_norm")
        ({"max_grad_norm": math.inf}, r"max_grad_norm=inf: the clipping norm must be finite"),
        ({"noise_multiplier": math.inf}, r"noise_multiplier=inf: must be finite and > 0"),
    ],
)
def test_an_infinite_clipping_norm_or_noise_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(PrivacyError, match=match):
        DPConfig(**kwargs)


def test_large_finite_settings_are_still_accepted() -> None:
    """The bound is finiteness only: a large C (noise σ·C scales with it) is valid DP-SGD."""
    cfg = DPConfig(max_grad_norm=1e30, noise_multiplier=1e6)
    assert cfg.max_grad_norm == 1e30 and cfg.noise_multiplier == 1e6
