"""Linkage: hand-computed Hamming case, bites on float and 1024-bit LSH, chance on blind codes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import blind_release, lsh_release, make_records

from privacy.base import CodeRelease, FloatRelease, Records
from privacy.linkage import Linkage, LinkageConfig
from privacy.perturb import noise_std_for_snr, noisy_embeddings, perturb_images


def _pm(bits: str) -> list[float]:
    return [1.0 if b == "1" else -1.0 for b in bits]


def test_hand_computed_rates() -> None:
    released = np.array([_pm(c) for c in ("1111", "1100", "0011", "0000")], dtype=np.float32)
    gallery = np.array([_pm(c) for c in ("1110", "1111", "0011", "0000")], dtype=np.float32)
    # q0=1111: own 1110 at 1, 1111 at 0 closer -> top1 0, top2 1
    # q1=1100: own 1111 at 2, 1110 at 1 closer, 0000 tied at 2 -> top1 0, top2 1/2
    # q2, q3: own at 0, alone -> 1, 1
    victims = Records(
        split="test", index=np.arange(4), x=released, y=np.zeros(4, dtype=np.int64),
        reacquired={0.5: gallery},
    )  # fmt: skip
    aux = Records(split="val", index=np.arange(1), x=released[:1], y=np.zeros(1, dtype=np.int64))
    attack = Linkage(CodeRelease(lambda x: x > 0, 4), LinkageConfig(strength=0.5, ks=(1, 2)))
    out = attack.fit(aux).run({"test": victims})
    assert out["test/top1"] == pytest.approx(0.5)
    assert out["test/top2"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert out["test/top1_baseline"] == 0.25 and out["test/top2_baseline"] == 0.5
    assert attack.sweep_rows[0]["top1"] == pytest.approx(0.5)


@pytest.mark.parametrize("n", [1, 3])
def test_ks_beyond_the_gallery_read_the_whole_gallery(n: int) -> None:
    """k >= n: every victim's own record is among its top k, so the rate and the baseline are 1
    (ks=(1, 5, 10) on 3 records used to raise in the zip of requested and clipped ks)."""
    codes = np.array([_pm(c) for c in ("1100", "0011", "1010")][:n], dtype=np.float32)
    victims = Records(split="test", index=np.arange(n), x=codes, y=np.zeros(n, dtype=np.int64),
                      reacquired={0.5: codes})  # fmt: skip
    aux = Records(split="val", index=np.arange(1), x=codes[:1], y=np.zeros(1, dtype=np.int64))
    attack = Linkage(CodeRelease(lambda x: x > 0, 4), LinkageConfig(strength=0.5, ks=(1, 5, 10)))
    out = attack.fit(aux).run({"test": victims})
    assert out["test/top1"] == 1.0 and out["test/top1_baseline"] == 1 / n
    for k in (5, 10):
        assert out[f"test/top{k}"] == 1.0 and out[f"test/top{k}_baseline"] == 1.0


def _victims(recs, snr=20.0):
    return {
        s: replace(recs[s], reacquired={snr: noisy_embeddings(recs[s].x, snr, seed=7)})
        for s in ("train", "test")
    }


@pytest.mark.parametrize("kind", ["float", "lsh1024"])
def test_bites_on_float_and_lsh_1024(kind: str) -> None:
    recs = make_records(n=(200, 50, 150), dim=64)
    release = FloatRelease() if kind == "float" else lsh_release(recs["train"].x, 1024)
    out = Linkage(release, LinkageConfig(strength=20.0)).fit(recs["val"]).run(_victims(recs))
    for g in ("train", "test"):
        assert out[f"{g}/top1"] >= 0.9 > 10 * out[f"{g}/top1_baseline"]


def test_blind_codes_fall_to_chance() -> None:
    """Tolerance: top-10 within 0.08 of chance 10/150 (binomial sd ~0.02 over 150 queries)."""
    recs = make_records(n=(200, 50, 150), dim=64)
    out = (
        Linkage(blind_release(256), LinkageConfig(strength=20.0))
        .fit(recs["val"])
        .run(_victims(recs))
    )
    assert abs(out["test/top10"] - out["test/top10_baseline"]) <= 0.08
    assert out["test/top1"] <= out["test/top1_baseline"] + 0.03


def test_snr_is_the_stated_one() -> None:
    x = np.random.default_rng(0).normal(size=(4000, 8)) * 3.0
    std = noise_std_for_snr(x, 20.0)
    assert std == pytest.approx(0.3, rel=0.05)  # signal power 9 / 100
    noisy = noisy_embeddings(x, 20.0, seed=1)
    assert 10 * np.log10(9.0 / np.var(noisy - x)) == pytest.approx(20.0, abs=0.3)


def test_image_perturbation_seeded_and_bounded() -> None:
    img = np.full((3, 10, 10), 100, dtype=np.uint8)
    assert np.array_equal(perturb_images(img, 0.0, seed=0), img)
    a, b = perturb_images(img, 0.5, seed=3), perturb_images(img, 0.5, seed=3)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == img.shape
    # flat image: shift and contrast change nothing, only noise of sd 0.05*0.5*255 ~ 6.4 remains
    assert np.std(a.astype(float) - 100) == pytest.approx(6.375, rel=0.2)


def test_empty_victim_group_is_refused() -> None:
    """An empty group has no chance baseline k / 0 (it raised ZeroDivisionError)."""
    from privacy.errors import PrivacyError

    recs = make_records(n=(20, 30, 20), dim=8)
    empty = recs["test"].subset(np.arange(0))
    empty = replace(empty, reacquired={0.5: empty.x})
    attack = Linkage(lsh_release(recs["train"].x, 16)).fit(recs["val"])
    with pytest.raises(PrivacyError, match="test victim group holds no records"):
        attack.run({"test": empty})


def test_snr_must_be_a_number_of_db() -> None:
    """NaN dB made a NaN gallery (every code all zeros) and -inf dB divided by zero; +inf dB is no
    noise: the gallery is the embeddings themselves."""
    from privacy.errors import PrivacyError

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    assert np.array_equal(noisy_embeddings(x, float("inf"), seed=0), x)
    for bad in (float("nan"), float("-inf")):
        with pytest.raises(PrivacyError, match=r"snr_db=.*: the SNR must be a number of dB"):
            noisy_embeddings(x, bad, seed=0)


def test_image_perturbation_refuses_non_uint8() -> None:
    """Float images in [0, 1] came back as uint8 noise on the 0-255 scale (the image was lost)."""
    from privacy.errors import PrivacyError

    with pytest.raises(PrivacyError, match=r"takes uint8 images .* got float64"):
        perturb_images(np.full((2, 6, 6), 0.5), 0.5, seed=0)


@pytest.mark.parametrize("ks", [(-1,), (0, 10), ()])
def test_ranks_below_one_are_refused(ks: tuple[int, ...]) -> None:
    """ks=(-1,) reported top-1 0 beside a chance of -1/20 = -0.05; () raised an IndexError."""
    from privacy.errors import PrivacyError

    recs = make_records(n=(20, 30, 20), dim=8)
    victims = {"test": replace(recs["test"], reacquired={0.5: recs["test"].x})}
    attack = Linkage(lsh_release(recs["train"].x, 16), LinkageConfig(ks=ks)).fit(recs["val"])
    with pytest.raises(PrivacyError, match=r"linkage: ks=.*each >= 1"):
        attack.run(victims)


def test_stream_seeds_are_non_negative_integers() -> None:
    """privacy.streams: int() made seed 1.5 (and True) the stream of seed 1, silently; a numpy
    integer is the same seed as the int."""
    from privacy.errors import PrivacyError
    from privacy.streams import seed_sequence

    ctx = {"split": "train"}
    state = seed_sequence(1, ctx).generate_state(4)
    assert np.array_equal(seed_sequence(np.int64(1), ctx).generate_state(4), state)
    for bad in (1.5, True, -3):
        with pytest.raises(PrivacyError, match=rf"seed {bad!r}: use a non-negative integer"):
            seed_sequence(bad, ctx)
