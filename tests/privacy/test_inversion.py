"""Embedding inversion: bites on float, 1024-bit LSH and linear codes; falls to the mean-embedding
baseline on codes drawn independently of the data (tolerances stated per assertion)."""

from __future__ import annotations

import pytest
from conftest import blind_release, linear_release, lsh_release, make_records

from privacy.base import FloatRelease
from privacy.inversion import Inversion, InversionConfig

CFG = InversionConfig(epochs=60, hidden=(256,))


@pytest.fixture(scope="module")
def recs():
    return make_records(n=(150, 200, 100), dim=32)


@pytest.mark.parametrize("kind", ["float", "lsh1024", "linear256"])
def test_bites(recs, kind: str) -> None:
    release = {
        "float": FloatRelease(),
        "lsh1024": lsh_release(recs["train"].x, 1024),
        "linear256": linear_release(32, 256),
    }[kind]
    out = Inversion(release, CFG).fit(recs["val"]).run({"test": recs["test"]})
    assert out["test/cosine"] >= out["test/cosine_baseline"] + 0.2
    assert out["test/cosine_centered"] >= 0.6 > out["test/cosine_centered_baseline"] + 0.5
    assert out["test/mse"] < 0.6 * out["test/mse_baseline"]
    assert out["test/reid_top1"] >= 0.5 > 10 * out["test/reid_top1_baseline"]


def test_blind_codes_fall_to_the_mean_embedding(recs) -> None:
    out = Inversion(blind_release(128), CFG).fit(recs["val"]).run({"test": recs["test"]})
    assert abs(out["test/cosine_centered"]) <= 0.1  # vs 0 for the mean embedding
    assert out["test/cosine"] <= out["test/cosine_baseline"] + 0.02
    assert out["test/mse"] >= 0.95 * out["test/mse_baseline"]
    assert out["test/reid_top10"] <= out["test/reid_top10_baseline"] + 0.1


def test_empty_victim_group_is_refused(recs) -> None:
    """An empty group gave NaN means and then a failing broadcast."""
    import numpy as np

    from privacy.errors import PrivacyError

    attack = Inversion(FloatRelease(), InversionConfig(epochs=1, hidden=(8,))).fit(recs["val"])
    with pytest.raises(PrivacyError, match="test victim group holds no records"):
        attack.run({"test": recs["test"].subset(np.arange(0))})
