"""Embedding inversion on victims the model cannot read: refused with a PrivacyError naming the
widths, instead of a torch RuntimeError or a numpy broadcast error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import linear_release, make_records

from privacy.base import FloatRelease
from privacy.errors import PrivacyError
from privacy.inversion import Inversion, InversionConfig

CFG = InversionConfig(epochs=2, hidden=(8,))


def test_victims_of_another_embedding_width_are_refused() -> None:
    """Float-control victims of 6 dimensions against a model fitted on 8 were a torch
    RuntimeError (mat1 and mat2 shapes cannot be multiplied (40x6 and 8x8))."""
    aux = make_records(n=(10, 40, 10), dim=8)["val"]
    other = make_records(n=(10, 10, 40), dim=6)["test"]
    attack = Inversion(FloatRelease(), CFG).fit(aux)
    with pytest.raises(PrivacyError, match=r"test victims' embeddings have 6 dimensions, the aux"):
        attack.run({"test": other})


def test_released_codes_of_another_width_are_refused() -> None:
    """12-bit released codes against a model fitted on 16-bit aux codes: a torch RuntimeError.
    Codes of the right width still run (numbers in range)."""
    recs = make_records(n=(10, 40, 20), dim=8)
    attack = Inversion(linear_release(8, 16), CFG).fit(recs["val"])
    bad = dataclasses.replace(recs["test"], released=np.zeros((20, 12), dtype=bool))
    with pytest.raises(PrivacyError, match=r"the published codes have 12 bits, the head 16"):
        attack.run({"test": bad})
    good = dataclasses.replace(recs["test"], released=np.zeros((20, 16), dtype=bool))
    out = attack.run({"test": good})
    # one code for every victim: one reconstruction, re-identifying at exactly chance (1 / 20)
    assert out["test/reid_top1"] == pytest.approx(1 / 20)
