"""Image re-acquisition (privacy/perturb.py): only batches of images are perturbed."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.errors import PrivacyError
from privacy.perturb import perturb_image_list, perturb_images


def test_one_image_without_its_batch_axis_is_refused() -> None:
    """A single [H, W] image was read as H images of one row: at strength 0.25 (no shift) each
    row got its own contrast factor around its own mean, silently (a different perturbation
    model); at 0.5 the shift failed with `ValueError: not enough values to unpack`. A [N, H, W, C,
    1] array was perturbed as if its fourth axis were a second image axis."""
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    for strength in (0.25, 0.5):
        with pytest.raises(PrivacyError, match=r"takes a batch of images .* got shape \(8, 8\)"):
            perturb_images(img, strength, seed=0)
    with pytest.raises(PrivacyError, match=r"got shape \(2, 8, 8, 3, 1\)"):
        perturb_images(np.zeros((2, 8, 8, 3, 1), dtype=np.uint8), 0.5, seed=0)
    # the fixes the message names give the batch's perturbation: img[None], or the list form
    batch = perturb_images(img[None], 0.5, seed=(4, 0))
    assert batch.shape == (1, 8, 8)
    assert np.array_equal(perturb_image_list([img], 0.5, seed=4)[0], batch[0])
    # gray and colour batches keep their shape
    assert perturb_images(np.zeros((3, 8, 8, 3), dtype=np.uint8), 1.0, seed=0).shape == (3, 8, 8, 3)
