"""Seeded re-acquisition of victims for the linkage gallery.

A re-acquired record is the same patient seen again, not the released bytes: the attacker's copy
differs by acquisition noise. Two models, both seeded and reproducible:

* :func:`perturb_images` (sources with images; the backbone then re-embeds them): at strength ``s``
  in ``[0, 1]`` each image gets a random integer shift of up to ``round(2 s)`` pixels per axis
  (edge-replicated), a contrast factor drawn uniformly from ``[1 - 0.2 s, 1 + 0.2 s]`` around the
  image mean and additive Gaussian pixel noise of standard deviation ``0.05 s`` of the 0–255 range.
  ``s = 0`` returns the images unchanged.
* :func:`noisy_embeddings` (embeddings-only sources): additive Gaussian noise at a stated
  signal-to-noise ratio, ``SNR_dB = 10 log10(P_signal / P_noise)`` with ``P_signal`` the mean squared
  deviation of the embeddings from their mean (per dimension, averaged), so the noise is measured
  against the variation that tells records apart, not against the shared offset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from privacy.errors import PrivacyError


def perturb_images(
    images: np.ndarray, strength: float, *, seed: int | tuple[int, ...]
) -> np.ndarray:
    """uint8 ``[N, H, W(, C)]`` -> perturbed uint8 images of the same shape (see module docstring)."""
    if not 0.0 <= strength <= 1.0:
        raise PrivacyError(f"image perturbation strength {strength} must be in [0, 1]")
    if images.dtype != np.uint8:  # the noise and the clip are on the 0-255 scale
        raise PrivacyError(
            f"perturb_images takes uint8 images (0-255), got {images.dtype}; convert them first"
        )
    if images.ndim not in (3, 4):  # one [H, W] image was read as H images of one row each
        raise PrivacyError(
            f"perturb_images takes a batch of images [N, H, W] or [N, H, W, C], got shape "
            f"{images.shape}; pass one image as img[None], or images of several sizes to "
            "perturb_image_list"
        )
    if strength == 0.0:
        return images.copy()
    rng = np.random.default_rng(seed)
    n = len(images)
    out = images.astype(np.float32)
    max_shift = round(2 * strength)
    if max_shift:
        shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            out[i] = _shift(out[i], int(dy), int(dx))
    contrast = rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength, size=n)
    axes = tuple(range(1, out.ndim))
    mean = out.mean(axis=axes, keepdims=True)
    out = (out - mean) * contrast.reshape((n,) + (1,) * (out.ndim - 1)) + mean
    out += rng.normal(0.0, 0.05 * strength * 255.0, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def perturb_image_list(
    images: Sequence[np.ndarray], strength: float, *, seed: int
) -> list[np.ndarray]:
    """:func:`perturb_images` for images of different sizes: each image on its own, seeded by
    ``(seed, position)``."""
    return [perturb_images(img[None], strength, seed=(seed, i))[0] for i, img in enumerate(images)]


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift an ``H x W (x C)`` image by (dy, dx) pixels, replicating the edge."""
    h, w = img.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return img[rows][:, cols]


def noise_std_for_snr(x: np.ndarray, snr_db: float) -> float:
    """Per-dimension noise standard deviation that gives ``snr_db`` against ``x``'s variation."""
    if math.isnan(snr_db) or snr_db == -math.inf:  # NaN noise, or a division by zero
        raise PrivacyError(
            f"snr_db={snr_db}: the SNR must be a number of dB (e.g. 20.0; inf = no noise)"
        )
    signal = float(np.mean(np.var(x.astype(np.float64), axis=0)))
    return float(np.sqrt(signal / 10.0 ** (snr_db / 10.0)))


def noisy_embeddings(
    x: np.ndarray, snr_db: float, *, seed: int, reference: np.ndarray | None = None
) -> np.ndarray:
    """``x`` plus seeded Gaussian noise at ``snr_db`` (measured against ``reference``, default ``x``)."""
    std = noise_std_for_snr(x if reference is None else reference, snr_db)
    rng = np.random.default_rng(seed)
    return (x + rng.normal(0.0, std, size=x.shape)).astype(np.float32)
