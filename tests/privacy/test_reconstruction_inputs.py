"""Image reconstruction on images it cannot score: refused with a PrivacyError naming the value and
the fix, instead of PSNR and SSIM on another pixel range or axis order, or a traceback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import linear_release, make_records

from privacy.base import FloatRelease
from privacy.errors import PrivacyError
from privacy.reconstruction import Reconstruction, ReconstructionConfig

CFG = ReconstructionConfig(epochs=2, hidden=8, channels=8)


@pytest.fixture(scope="module")
def recs():
    return make_records(n=(10, 40, 20), dim=8, images=True)


def _with(rec, images):
    return dataclasses.replace(rec, images=images)


@pytest.fixture(scope="module")
def fitted(recs):
    return Reconstruction(FloatRelease(), CFG).fit(recs["val"])


def test_a_gray_channel_axis_is_the_same_image(recs, fitted) -> None:
    """The rule stays: [N, H, W, 1] is [N, H, W]; both score the same numbers."""
    test = recs["test"]
    flat = fitted.run({"test": test})
    assert fitted.run({"test": _with(test, test.images[..., None])}) == flat


@pytest.mark.parametrize(
    ("scale", "dtype"), [(1 / 255, np.float64), (1.0, np.float32), (257, np.uint16)]
)
def test_images_other_than_uint8_are_refused_not_scored_on_another_range(
    recs, scale: float, dtype
) -> None:
    """Pixels were divided by 255 whatever their type: [0, 1] float images scored the mean-image
    baseline 62.8 dB and the float control 5.9 dB (the targets all under 0.004, the sigmoid decoder
    trained towards them); 16-bit images PSNR -43 dB. Even 0..255 floats are refused: the images
    of a Records are uint8 (privacy.base.Records)."""
    aux, test = recs["val"], recs["test"]
    conv = (aux.images.astype(np.float64) * scale).astype(dtype)
    with pytest.raises(PrivacyError, match=rf"auxiliary images \('val'\) are {np.dtype(dtype)}; "):
        Reconstruction(FloatRelease(), CFG).fit(_with(aux, conv))
    fitted = Reconstruction(FloatRelease(), CFG).fit(aux)
    conv = (test.images.astype(np.float64) * scale).astype(dtype)
    with pytest.raises(PrivacyError, match=r"victim images \('test'\) .* must be uint8 0\.\.255"):
        fitted.run({"test": _with(test, conv)})


def test_channels_first_images_are_refused(recs) -> None:
    """[N, 3, H, W] was transposed as if channels-last: an 8 x 3 px image of 8 channels was
    decoded and scored, silently."""
    aux = recs["val"]
    rgb = np.repeat(aux.images[:, None], 3, axis=1)  # [N, 3, 8, 8]
    with pytest.raises(
        PrivacyError, match=r"shape \[40, 3, 8, 8\]; give \[N, H, W\] or .*moveaxis"
    ):
        Reconstruction(FloatRelease(), CFG).fit(_with(aux, rgb))
    Reconstruction(FloatRelease(), CFG).fit(_with(aux, np.moveaxis(rgb, 1, -1)))  # the fix fits


def test_records_without_images_are_refused(recs, fitted) -> None:
    """A library caller who skipped skip_reason got a bare AssertionError."""
    with pytest.raises(PrivacyError, match=r"auxiliary records \('val'\) carry no images"):
        Reconstruction(FloatRelease(), CFG).fit(_with(recs["val"], None))
    with pytest.raises(PrivacyError, match=r"victim records \('test'\) carry no images"):
        fitted.run({"test": _with(recs["test"], None)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im: np.repeat(im[..., None], 3, axis=3), r"are 8x8 px, 3 channel\(s\), the aux"),
        (lambda im: np.pad(im, ((0, 0), (1, 1), (1, 1))), r"are 10x10 px, 1 channel\(s\), the aux"),
    ],
)
def test_victim_images_of_another_shape_than_aux_are_refused(recs, fitted, change, message) -> None:
    """RGB victims against a grayscale decoder were a scikit-image ValueError ("Input images must
    have the same dimensions"); 10 x 10 victims against 8 x 8 a numpy broadcast ValueError."""
    test = recs["test"]
    with pytest.raises(PrivacyError, match=message + r" images \(the decoder's target\) 8x8 px, 1"):
        fitted.run({"test": _with(test, change(test.images))})


def test_released_codes_of_another_width_are_refused(recs) -> None:
    """Victims' released codes of 12 bits against a decoder trained on 16-bit aux codes were a
    torch RuntimeError (mat1 and mat2 shapes cannot be multiplied)."""
    attack = Reconstruction(linear_release(8, 16), CFG).fit(recs["val"])
    test = dataclasses.replace(recs["test"], released=np.zeros((20, 12), dtype=bool))
    with pytest.raises(PrivacyError, match=r"the published codes have 12 bits, the head 16"):
        attack.run({"test": test})
