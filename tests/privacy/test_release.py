"""Code release (privacy/release.py): randomised response and k-anonymity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privacy.base import CodeRelease
from privacy.errors import PrivacyError
from privacy.release import (
    debiased_hamming,
    k_anonymize,
    keep_probability,
    pair_flip_rate,
    randomized_response,
    snap_to_k_anonymous,
)


def holders(codes: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return counts[inv.reshape(-1)]


def random_codes(n: int, bits: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, bits)) < 0.5


def clustered_codes(n: int, bits: int, seed: int) -> np.ndarray:
    """A few big clusters of identical codes plus outliers 1-3 bits away (like trained heads)."""
    rng = np.random.default_rng(seed)
    centers = rng.random((4, bits)) < 0.5
    codes = centers[rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])].copy()
    for i in rng.choice(n, size=n // 10, replace=False):
        codes[i, rng.choice(bits, size=rng.integers(1, 4), replace=False)] ^= True
    return codes


@pytest.mark.parametrize("make", [random_codes, clustered_codes])
@pytest.mark.parametrize(
    ("n", "bits", "k"), [(500, 12, 20), (300, 8, 5), (200, 48, 2), (50, 12, 50)]
)
def test_k_anonymous_release_has_no_code_with_fewer_than_k_holders(make, n, bits, k) -> None:
    codes = make(n, bits, seed=n + bits)
    out = k_anonymize(codes, k)
    assert holders(out.codes).min() >= k
    assert out.min_anonymity_after >= k
    unchanged = ~out.changed
    assert np.array_equal(out.codes[unchanged], codes[unchanged])
    # only records whose code had < k holders change
    assert np.all(holders(codes)[out.changed] < k)
    assert out.summary()["share_changed"] == pytest.approx(out.changed.mean())


def test_replacement_is_the_nearest_safe_code_with_deterministic_ties() -> None:
    a = np.array([0, 0, 0, 0], bool)
    b = np.array([1, 1, 0, 0], bool)
    c = np.array([1, 1, 1, 1], bool)
    lone_ab = np.array([1, 0, 0, 0], bool)  # 1 from a, 1 from b: tie
    lone_near_c = np.array([1, 1, 1, 0], bool)  # 1 from c, 1 from b: tie
    codes = np.array([a] * 2 + [b] * 3 + [c] * 3 + [lone_ab, lone_near_c])
    out = k_anonymize(codes, 2)
    # ties go to the lexicographically smaller code, whatever the holder counts (b has 3, a 2):
    # the rule must read only what the release publishes
    assert np.array_equal(out.codes[8], a)
    assert np.array_equal(out.codes[9], b)
    # record order does not matter
    perm = np.random.default_rng(0).permutation(len(codes))
    again = k_anonymize(codes[perm], 2)
    assert np.array_equal(again.codes, out.codes[perm])
    assert np.array_equal(k_anonymize(codes, 2).codes, out.codes)


def test_already_k_anonymous_codes_are_unchanged() -> None:
    codes = np.repeat(random_codes(5, 16, seed=1), 20, axis=0)
    out = k_anonymize(codes, 20)
    assert np.array_equal(out.codes, codes) and not out.changed.any()


def test_no_safe_code_falls_back_to_the_most_frequent_code() -> None:
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1]], bool)
    out = k_anonymize(codes, 4)
    assert (out.codes == np.array([0, 0], bool)).all() and out.min_anonymity_after == 4


@pytest.mark.parametrize("k", [0, -1, 11, 2.5, True])
def test_bad_k_is_refused(k) -> None:
    with pytest.raises(PrivacyError, match="release k="):
        k_anonymize(random_codes(10, 8, 0), k)


def test_keep_probability_formula() -> None:
    assert keep_probability(12.0, 12) == pytest.approx(math.e / (1 + math.e))
    assert keep_probability(math.inf, 48) == 1.0
    assert keep_probability(1e-9, 10) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(("eps", "bits"), [(1.0, 12), (16.0, 48), (64.0, 16)])
def test_randomized_response_flips_at_the_stated_rate(eps: float, bits: int) -> None:
    codes = random_codes(4000, bits, seed=3)
    out = randomized_response(codes, eps, seed=7)
    flips = int((out != codes).sum())
    trials = codes.size
    expected = 1 / (1 + math.exp(eps / bits))  # hand formula, not the module's function
    p_value = stats.binomtest(flips, trials, expected).pvalue
    assert p_value > 1e-3, (flips / trials, expected)
    # flips are independent of the bit value (symmetric mechanism)
    ones, zeros = codes, ~codes
    rate1 = (out != codes)[ones].mean()
    rate0 = (out != codes)[zeros].mean()
    assert abs(rate1 - rate0) < 0.02
    assert np.array_equal(randomized_response(codes, eps, seed=7), out)  # seeded


def test_infinite_budget_releases_codes_unchanged_and_bad_budgets_are_refused() -> None:
    codes = random_codes(10, 8, 0)
    assert np.array_equal(randomized_response(codes, math.inf, seed=0), codes)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(PrivacyError, match="epsilon_code"):
            randomized_response(codes, bad, seed=0)


def test_debiased_hamming_is_unbiased() -> None:
    bits, eps = 32, 64.0  # f = 1/(1+e^2) = 0.119: the estimate has sd 0.017 over 20000 rows
    rng = np.random.default_rng(0)
    q = rng.random((1, bits)) < 0.5
    db = np.repeat(q, 20000, axis=0)
    db[:, :10] ^= True  # true distance 10
    noisy = randomized_response(db, eps, seed=1)
    f = pair_flip_rate(eps, bits, both_released=False)
    observed = (noisy != q).sum(axis=1)
    assert observed.mean() > 10.5  # raw distances are biased upwards
    assert debiased_hamming(observed, bits, f).mean() == pytest.approx(10.0, abs=0.1)
    f2 = pair_flip_rate(eps, bits, both_released=True)
    assert f2 == pytest.approx(2 * f * (1 - f))


@pytest.mark.parametrize("seed", range(20))
def test_the_attackers_snap_reproduces_the_release_from_public_codes(seed: int) -> None:
    # clustered codes with many equal-distance candidates; the snap sees only the released codes
    rng = np.random.default_rng(seed)
    centres = rng.random((6, 5)) < 0.5
    codes = centres[rng.integers(0, 6, 120)] ^ (rng.random((120, 5)) < 0.15)
    for k in (2, 5, 12):
        out = k_anonymize(codes, k)
        assert np.array_equal(snap_to_k_anonymous(codes, out.codes, k), out.codes)


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_non_bool_codes_are_refused_not_cast(dtype) -> None:
    """±1 signs cast to bool are all True: every code would collapse to one and k-anonymity
    would look perfect. The release functions and ``CodeRelease`` take bool codes only."""
    signs = np.where(np.random.default_rng(0).random((6, 4)) < 0.5, -1, 1).astype(dtype)
    for call in (
        lambda: k_anonymize(signs, 1),
        lambda: randomized_response(signs, math.inf, seed=0),
        lambda: snap_to_k_anonymous(signs, signs > 0, 1),
        lambda: CodeRelease(lambda x: signs, 4).encode(np.zeros((6, 2))),
    ):
        with pytest.raises(PrivacyError, match=f"{np.dtype(dtype)}"):
            call()


@pytest.mark.parametrize(
    ("eps", "bits"), [(1.0, 48), (4.0, 12), (12.0, 12), (64.0, 12), (584.0, 16), (1000.0, 16)]
)
def test_the_realised_per_bit_ratio_never_exceeds_e_to_the_eps_over_k(eps, bits) -> None:
    """numpy's ``random()`` draws multiples of 2^-53, so a keep probability that is one gives the
    flip rate ``1 - keep`` exactly; its ratio ``keep / (1 - keep)`` must stay <= e^(ε/K). At
    ε/K = 62.5 the float formula rounded to keep = 1.0: no bit could ever flip, ε = ∞ for a
    release recorded as ε_code = 1000."""
    keep = keep_probability(eps, bits)
    assert (keep * 2**53).is_integer() and 0.5 <= keep < 1.0
    assert math.log(keep) - math.log1p(-keep) <= eps / bits
    formula = 1 / (1 + math.exp(-eps / bits))  # hand formula: within a few 2^-53 steps of it
    assert abs(keep - formula) <= 16 * 2.0**-53 or formula == 1.0
    if eps / bits > 37:  # the formula's flip rate 1/(1+e^62.5) = 7e-28 is below 2^-53
        assert keep == 1.0 - 2.0**-53


def test_every_finite_budget_leaves_every_bit_flippable(monkeypatch) -> None:
    """ε-LDP bounds the ratio of any two outputs' probabilities, so every output must stay
    possible. The largest draw numpy's ``random()`` can return (1 - 2^-53) flips every bit at
    ε_code = 1000 over 16 bits; the smallest (0) flips none."""
    import privacy.release as release

    class Draws:
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self, shape: tuple[int, ...]) -> np.ndarray:
            return np.full(shape, self.value)

    codes = random_codes(5, 16, seed=2)
    monkeypatch.setattr(release, "flip_generator", lambda seed: Draws(1.0 - 2.0**-53))
    assert np.array_equal(randomized_response(codes, 1000.0, seed=0), ~codes)
    monkeypatch.setattr(release, "flip_generator", lambda seed: Draws(0.0))
    assert np.array_equal(randomized_response(codes, 1000.0, seed=0), codes)
