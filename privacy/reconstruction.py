"""Image reconstruction: decode a victim's image from its released code.

A decoder is trained on the attacker's (released item -> image) pairs — aux images hashed through
the backbone and the head — and applied to the victims' released codes, at the source's native
resolution. The decoder is an MLP to a 7x7x32 grid followed by (nearest x2 upsampling + 3x3 conv +
GELU, channels halving down to 8) blocks (sized so that PneumoniaMNIST-sized data decodes
within the attack budget on 2 CPU cores: 64 channels and 200 epochs took 400 s there) until the grid covers the image, a 3x3 conv to the image's channels, a resize to the
exact native size and a sigmoid: a small DCGAN-style generator (Radford et al., ICLR 2016) trained
with a pixel MSE, as in learning-based model inversion (e.g. Yang et al., ACM CCS 2019, "Neural
network inversion in adversarial setting via background knowledge alignment"). The epoch is chosen
on a held-out share of aux.

*Mixed sizes.* Image folders may hold images of different sizes and channel counts; the decoder needs
one target shape. :func:`common_shape` picks it — a stated ``(H, W)`` (``attack.reconstruction_size``),
else the most frequent ``(H, W)`` among the images (ties: the larger area, then the larger height) —
with the most frequent channel count (1 = grayscale, 3 = RGB; ties: 3), and :func:`to_common_shape`
resizes every image to it (bilinear, PIL; grayscale replicated to RGB or RGB converted to luminance,
alpha dropped). Training targets, PSNR and SSIM are all computed at that shape, so an image that was
resized is scored against its resized original; images that already have the shape are untouched.

Reported per victim group: mean PSNR and SSIM against the originals (``skimage.metrics``, pixels in
[0, 1]) beside the code-blind baseline (the aux mean image for every victim). Embeddings-only
sources have no images: the attack is skipped with that reason. Reconstructions are returned by
:meth:`Reconstruction.examples` for the optional grid only; they never reach MLflow.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hashers.base import is_integer
from privacy._learn import predict, train_regressor
from privacy.base import Attack, Records
from privacy.errors import PrivacyError


@dataclass(frozen=True, kw_only=True)
class ReconstructionConfig:
    hidden: int = 512
    channels: int = 32
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    holdout: float = 0.2

    def __post_init__(self) -> None:
        # hidden=0 or channels=0 made a decoder whose output ignores the features: every code,
        # and the float control, read as code-blind (the inversion model's rule, privacy._learn)
        for key in ("hidden", "channels"):
            value = getattr(self, key)
            if not is_integer(value) or value < 1:
                raise PrivacyError(
                    f"reconstruction: {key}={value!r} must be an integer >= 1 (the decoder's "
                    f"width; default {getattr(ReconstructionConfig, key)})"
                )


class Decoder(nn.Module):
    """Features ``[B, F]`` -> images ``[B, C, H, W]`` in (0, 1) (see the module docstring)."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], *, hidden: int, channels: int):
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.fc = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, channels * 49), nn.GELU()
        )
        steps = max(0, math.ceil(math.log2(max(h, w) / 7)))
        blocks: list[nn.Module] = []
        width = channels
        for _ in range(steps):  # channels halve as the grid doubles (cheap at native resolution)
            nxt = max(8, width // 2)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, nxt, 3, padding=1),
                nn.GELU(),
            ]
            width = nxt
        blocks.append(nn.Conv2d(width, c, 3, padding=1))
        self.conv = nn.Sequential(*blocks)
        self.channels = channels

    def forward(self, z: Tensor) -> Tensor:
        g = self.fc(z).view(-1, self.channels, 7, 7)
        img = self.conv(g)
        if img.shape[-2:] != self.shape[1:]:
            img = nn.functional.interpolate(img, size=self.shape[1:], mode="bilinear")
        return torch.sigmoid(img)


def _channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 2 or shape[2] == 1 else 3


def common_shape(
    shapes: Iterable[tuple[int, ...]], size: tuple[int, int] | None = None
) -> tuple[int, int, int]:
    """``(H, W, C)`` every image is brought to (module docstring): ``size`` or the most frequent
    ``(H, W)``, and the most frequent channel count (C = 1 or 3)."""
    sizes: Counter[tuple[int, int]] = Counter()
    channels: Counter[int] = Counter()
    for shape in shapes:
        sizes[(int(shape[0]), int(shape[1]))] += 1
        channels[_channels(shape)] += 1
    if not sizes:
        raise PrivacyError("reconstruction: no images to reconstruct")
    if size is None:
        size = max(sizes, key=lambda hw: (sizes[hw], hw[0] * hw[1], hw[0]))
    c = max(channels, key=lambda ch: (channels[ch], ch))
    if min(size) < 3:  # SSIM's smallest window is 3 x 3
        raise PrivacyError(
            f"reconstruction: the images would be compared at {size[0]}x{size[1]} px; SSIM needs "
            "both sides >= 3: set attack.reconstruction_size (e.g. [28, 28])"
        )
    return int(size[0]), int(size[1]), c


def to_common_shape(
    images: np.ndarray | Sequence[np.ndarray], shape: tuple[int, int, int]
) -> np.ndarray:
    """uint8 images (an array or a list of differently sized ones) -> uint8 ``[N, H, W]`` (C = 1)
    or ``[N, H, W, 3]``, resized bilinearly where needed (module docstring)."""
    from PIL import Image

    h, w, c = shape
    want = (h, w) if c == 1 else (h, w, 3)
    if isinstance(images, np.ndarray) and images.shape[1:] == want:
        return images
    out = np.empty((len(images), *want), dtype=np.uint8)
    mode = "L" if c == 1 else "RGB"
    for i, img in enumerate(images):
        arr = np.asarray(img, dtype=np.uint8)
        if arr.shape == want:
            out[i] = arr
            continue
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        pil = Image.fromarray(arr).convert(mode)  # L <-> RGB; RGBA drops alpha
        if pil.size != (w, h):
            pil = pil.resize((w, h), Image.Resampling.BILINEAR)
        out[i] = np.asarray(pil, dtype=np.uint8).reshape(want)
    return out


def to_float_chw(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W(, C)]`` -> float32 ``[N, C, H, W]`` in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    return x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))


def image_scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Mean PSNR and SSIM over images ``[N, C, H, W]`` in [0, 1] (scikit-image); each image's PSNR
    is capped at 100 dB (an exact copy's would be infinite)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for p, t in zip(pred, true, strict=True):
        p64, t64 = p.astype(np.float64), t.astype(np.float64)
        mse = float(np.mean((p64 - t64) ** 2))
        # the cap holds for every image: capping only exact copies scored them below near-copies
        psnr.append(
            100.0 if mse == 0 else min(100.0, peak_signal_noise_ratio(t64, p64, data_range=1.0))
        )
        side = min(t.shape[1:])
        win = 7 if side >= 7 else side - (1 - side % 2)  # the largest odd window that fits
        ssim.append(structural_similarity(t64, p64, data_range=1.0, channel_axis=0, win_size=win))
    return float(np.mean(psnr)), float(np.mean(ssim))


def _hwc(images: np.ndarray) -> str:
    _, c, h, w = images.shape
    return f"{h}x{w} px, {c} channel(s)"


def _targets(records: Records, role: str) -> np.ndarray:
    """``records.images`` as float ``[N, C, H, W]`` in [0, 1], refused unless they are uint8
    ``[N, H, W]`` or ``[N, H, W, C]`` with C = 1 or 3 (what :func:`to_common_shape` returns)."""
    images = records.images
    if images is None:  # was a bare AssertionError
        raise PrivacyError(
            f"reconstruction: the {role} records ({records.split!r}) carry no images; the "
            "attack needs images for aux and every victim group (skip_reason says so for "
            "embeddings-only sources)"
        )
    if images.dtype != np.uint8:  # divided by 255 anyway: PSNR and SSIM on the wrong range
        raise PrivacyError(
            f"reconstruction: the {role} images ({records.split!r}) are {images.dtype}; they "
            "must be uint8 0..255 (PSNR and SSIM read them as such): convert [0, 1] floats "
            "with (images * 255).round().astype(np.uint8)"
        )
    if images.ndim != 3 and not (images.ndim == 4 and images.shape[3] in (1, 3)):
        # channels first [N, 3, H, W] was read as W channels of H x 3 px
        raise PrivacyError(
            f"reconstruction: the {role} images ({records.split!r}) have shape "
            f"{list(images.shape)}; give [N, H, W] or [N, H, W, C] with C = 1 or 3 (channels "
            "last: np.moveaxis(images, 1, -1) for [N, C, H, W]; to_common_shape for RGBA)"
        )
    return to_float_chw(images)


class Reconstruction(Attack):
    name = "reconstruction"
    Config = ReconstructionConfig
    min_aux = 20

    def skip_reason(self, aux: Records, victims: Mapping[str, Records]) -> str | None:
        if aux.images is None or any(v.images is None for v in victims.values()):
            return "the source has no images (embeddings-only): nothing to reconstruct"
        return None

    def _fit(self, aux: Records) -> None:
        target = _targets(aux, "auxiliary")
        feats = self.release.features(self.release.attacker_codes(aux.x))
        self.n_features = feats.shape[1]
        self.mean_image = target.mean(axis=0)
        c = self.config
        self.model = train_regressor(
            Decoder(feats.shape[1], target.shape[1:], hidden=c.hidden, channels=c.channels),
            feats,
            target,
            loss_fn=nn.functional.mse_loss,
            settings=c,
            seed=self.seed,
        )

    def reconstruct(self, victims: Records) -> np.ndarray:
        """Decoded images ``[N, C, H, W]`` from the victims' released codes."""
        feats = self.release.features(self.release.published(victims))
        if feats.shape[1] != self.n_features:  # was a torch RuntimeError in the first layer
            raise PrivacyError(
                f"reconstruction: the {victims.split} victims' released items give "
                f"{feats.shape[1]} features, the decoder was trained on {self.n_features} (the "
                "aux records' released form); pass codes of the same head and bit count, or "
                "embeddings of the same backbone, for aux and victims"
            )
        return predict(self.model, feats, batch_size=256)

    def run_group(self, victims: Records) -> dict[str, float]:
        true = _targets(victims, "victim")
        if true.shape[1:] != self.mean_image.shape:  # was a numpy / scikit-image ValueError
            raise PrivacyError(
                f"reconstruction: the {victims.split} victims' images are {_hwc(true)}, the aux "
                f"images (the decoder's target) {_hwc(self.mean_image[None])}; PSNR and SSIM "
                "compare images of one shape: bring every split to one with to_common_shape "
                "(pipeline.attack.common_images)"
            )
        pred = self.reconstruct(victims)
        base = np.broadcast_to(self.mean_image, true.shape)
        psnr, ssim = image_scores(pred, true)
        psnr_b, ssim_b = image_scores(base, true)
        return {"psnr": psnr, "psnr_baseline": psnr_b, "ssim": ssim, "ssim_baseline": ssim_b}

    def examples(self, victims: Records, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` originals and reconstructions (``[n, C, H, W]``), for the optional grid."""
        assert victims.images is not None
        sub = victims.subset(np.arange(min(n, len(victims))))
        return to_float_chw(sub.images), self.reconstruct(sub)
