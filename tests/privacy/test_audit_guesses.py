"""One-run audit (privacy/audit.py): guess fractions outside (0, 1] are refused, naming them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.audit import audit_epsilon
from privacy.errors import PrivacyError


def _canaries(m: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    included = np.zeros(m, dtype=bool)
    included[rng.permutation(m)[: m // 2]] = True  # exactly half in: separable scores, all right
    return included + rng.normal(0.0, 0.1, m), included


@pytest.mark.parametrize("fraction", [math.nan, 0.0, -0.5, 5.0])
def test_a_guess_fraction_outside_0_1_is_refused_naming_it(fraction: float) -> None:
    """NaN raised ``ValueError: cannot convert float NaN to integer``; 0 and -0.5 were silently
    read as one guess each side, 5.0 as every canary (a fraction of 5 guessed on 100 %)."""
    scores, included = _canaries()
    with pytest.raises(PrivacyError, match=rf"guess fraction\(s\) \[{fraction}\] outside \(0, 1\]"):
        audit_epsilon(scores, included, delta=0.0, guess_fractions=(0.1, fraction))


def test_fractions_in_0_1_count_the_guesses_they_name() -> None:
    """Fraction 1.0 on 100 canaries: 50 "in" + 50 "out" guesses; with perfectly separated scores
    every guess is right, and the bound is the closed form logit(0.05^(1/r)) at r = 100."""
    scores, included = _canaries()
    res = audit_epsilon(scores, included, delta=0.0, guess_fractions=(1.0,))
    assert res.guesses == 100 and res.correct == 100
    p = 0.05 ** (1 / 100)
    assert res.epsilon_lower_bound == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
