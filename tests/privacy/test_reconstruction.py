"""Image reconstruction: PSNR by hand, bites on leaky codes, mean-image baseline on blind codes,
skipped without images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blind_release, linear_release, make_records

from privacy.base import FloatRelease
from privacy.errors import PrivacyError
from privacy.reconstruction import Decoder, Reconstruction, ReconstructionConfig, image_scores

CFG = ReconstructionConfig(epochs=60, hidden=128, channels=16)


def test_scores_by_hand() -> None:
    true = np.random.default_rng(0).uniform(0.2, 0.8, size=(3, 1, 8, 8))
    psnr, ssim = image_scores(true + 0.1, true)  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert psnr == pytest.approx(20.0) and 0 < ssim < 1
    assert image_scores(true, true) == (100.0, 1.0)


def test_decoder_native_resolution() -> None:
    import torch

    for shape in ((1, 28, 28), (3, 30, 20), (1, 5, 5)):
        assert Decoder(4, shape, hidden=8, channels=16)(torch.zeros(2, 4)).shape == (2, *shape)


@pytest.fixture(scope="module")
def recs():
    return make_records(n=(100, 200, 100), dim=32, images=True)


@pytest.mark.parametrize("kind", ["float", "linear256"])
def test_bites(recs, kind: str) -> None:
    release = FloatRelease() if kind == "float" else linear_release(32, 256)
    out = Reconstruction(release, CFG).fit(recs["val"]).run({"test": recs["test"]})
    assert out["test/psnr"] >= out["test/psnr_baseline"] + 2.0  # dB
    assert out["test/ssim"] >= out["test/ssim_baseline"] + 0.2


def test_blind_codes_fall_to_the_mean_image(recs) -> None:
    out = Reconstruction(blind_release(128), CFG).fit(recs["val"]).run({"test": recs["test"]})
    assert out["test/psnr"] <= out["test/psnr_baseline"] + 0.5  # dB
    assert out["test/ssim"] <= out["test/ssim_baseline"] + 0.05


def test_skipped_without_images() -> None:
    recs = make_records(n=(10, 30, 10), dim=4)
    reason = Reconstruction(FloatRelease()).skip_reason(recs["val"], {"test": recs["test"]})
    assert reason and "no images" in reason


def test_common_shape_by_hand() -> None:
    from privacy.reconstruction import common_shape

    # (10, 12) twice, (14, 16) twice: a tie on count -> the larger area; RGB 3 vs gray 1 -> RGB
    shapes = [(10, 12, 3), (10, 12), (14, 16, 3), (14, 16, 3), (14, 16)]
    assert common_shape(shapes) == (14, 16, 3)
    assert common_shape([(10, 12), (10, 12, 1), (14, 16, 3)]) == (10, 12, 1)
    assert common_shape(shapes, (8, 9)) == (8, 9, 3)
    with pytest.raises(PrivacyError, match="no images"):
        common_shape([])
    # SSIM divided by zero on 1- and 2-pixel sides (its smallest window is 3 x 3)
    with pytest.raises(PrivacyError, match=r"at 2x5 px; SSIM needs both sides >= 3: set attack"):
        common_shape([(2, 5), (2, 5, 3)])
    assert common_shape([(2, 5)], (3, 3)) == (3, 3, 1)  # reconstruction_size overrides


def test_to_common_shape_resizes_and_converts() -> None:
    from privacy.reconstruction import to_common_shape

    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (4, 1))  # 4 x 20, columns 0..190
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 90
    out = to_common_shape([ramp, rgba], (4, 10, 1))
    assert out.shape == (2, 4, 10) and out.dtype == np.uint8
    assert (np.diff(out[0].astype(int), axis=1) > 0).all()  # the ramp stays a ramp when halved
    assert (out[1] == round(0.299 * 90)).all()  # RGBA -> luminance L = 0.299 R (+ 0 G, 0 B)


def test_psnr_cap_holds_for_near_copies() -> None:
    """An exact copy scores the 100 dB cap; a copy off by 1e-6 used to score
    10 log10(1 / 1e-12) = 120 dB, above the exact one. Off by 1e-3: 60 dB, under the cap."""
    true = np.random.default_rng(0).uniform(0.2, 0.8, size=(2, 1, 8, 8))
    assert image_scores(true + 1e-6, true)[0] == 100.0 == image_scores(true, true)[0]
    assert image_scores(true + 1e-3, true)[0] == pytest.approx(60.0)


def test_empty_victim_group_is_refused(recs) -> None:
    """An empty group reported PSNR and SSIM NaN (means of nothing) without an error."""
    attack = Reconstruction(FloatRelease(), ReconstructionConfig(epochs=1, hidden=8, channels=8))
    attack.fit(recs["val"])
    with pytest.raises(PrivacyError, match="test victim group holds no records"):
        attack.run({"test": recs["test"].subset(np.arange(0))})
