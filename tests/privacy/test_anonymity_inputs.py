"""Anonymity radii and linkage ranks are whole numbers, and at least one radius is asked for."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.anonymity import Anonymity, AnonymityConfig, set_sizes
from privacy.base import CodeRelease, FloatRelease, Records
from privacy.errors import PrivacyError
from privacy.linkage import Linkage, LinkageConfig

CODES = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)


def _victims() -> dict[str, Records]:
    x = CODES.astype(np.float32) * 2 - 1
    return {"test": Records(split="test", index=np.arange(5), x=x, y=np.zeros(5, dtype=np.int64),
                            reacquired={0.5: x})}  # fmt: skip


def test_no_radius_is_refused_not_an_anonymity_report_without_set_sizes() -> None:
    """radii=() returned only `distinct`, `n` and the baselines: no set size at all, so the
    report's `uniqueness` number (anonymity/<group>/r0/share_unique) was silently missing."""
    for release in (CodeRelease(lambda v: v > 0, 3), FloatRelease()):
        with pytest.raises(PrivacyError, match=r"radii=\(\) is empty; give at least one"):
            Anonymity(release, AnonymityConfig(radii=())).run(_victims())
    with pytest.raises(PrivacyError, match=r"radii=\(\) is empty"):
        set_sizes(CODES, ())


@pytest.mark.parametrize("radius", [1.5, True, "1"])
def test_a_radius_that_is_no_whole_number_of_bits_is_refused(radius) -> None:
    """1.5 reported r1 's sizes under a key `r1.5`, True under `rTrue`; '1' was a TypeError."""
    with pytest.raises(PrivacyError, match=r"radius .* is not a whole number of bits"):
        Anonymity(CodeRelease(lambda v: v > 0, 3), AnonymityConfig(radii=(0, radius))).run(
            _victims()
        )


def test_whole_radii_still_count_by_hand() -> None:
    k = set_sizes(CODES, (np.int64(1),))
    assert k[1].tolist() == [3, 3, 4, 3, 2]  # as tests/privacy/test_anonymity.py


@pytest.mark.parametrize("ks", [(1.5,), (True,), (1, 2.0)])
def test_linkage_ranks_that_are_no_whole_number_are_refused(ks) -> None:
    """ks=(1.5,) reported `top1.5` beside a chance of 0.3, ks=(True,) `topTrue`."""
    attack = Linkage(CodeRelease(lambda v: v > 0, 3), LinkageConfig(strength=0.5, ks=ks))
    aux = Records(split="val", index=np.arange(1), x=np.ones((1, 3), np.float32),
                  y=np.zeros(1, dtype=np.int64))  # fmt: skip
    with pytest.raises(PrivacyError, match=r"each >= 1 and a whole number"):
        attack.fit(aux).run(_victims())
    # whole ranks as numpy integers are fine: 5 distinct-or-tied records, own gallery copy at 0
    out = (
        Linkage(CodeRelease(lambda v: v > 0, 3), LinkageConfig(strength=0.5, ks=(np.int64(1),)))
        .fit(aux)
        .run(_victims())
    )
    # rows 0 and 1 share code 000 (tied: 1/2 each), rows 2-4 unique: (0.5 + 0.5 + 3) / 5
    assert out["test/top1"] == pytest.approx(0.8) and out["test/top1_baseline"] == 0.2
