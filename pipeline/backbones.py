"""Frozen feature extractors: DINOv2 (and other ViTs) through ``transformers``.

:func:`load_backbone` accepts

* a Hugging Face model id (default ``facebook/dinov2-base``, DINOv2 ViT-B/14; ``facebook/dino-vitb16``
  is the original DINO ViT-B/16, a ``ViTModel``), pinned by ``backbone.revision``;
* a local directory written by ``save_pretrained`` (or ``hf download <id> --local-dir <dir>``);
* ``tiny-random``: a small, randomly initialised, seeded ``Dinov2Model`` for offline tests and smoke
  runs only. Its embeddings are meaningless.

A model that is neither cached nor reachable raises :class:`BackboneUnavailableError` with the ways to
fix it, and so does one the hub answers for and refuses (an invalid id, no such model or revision, a
gated model: the key to fix, not "run with network access"); hashaudit never falls back to random
weights on its own.

:func:`preprocess` turns uint8 images (grayscale, RGB or RGBA; one array or a list of arrays) into
normalised ``[B, 3, S, S]`` float tensors, either by bicubic resizing or by centred zero padding
(MedMNIST+ style). The normalisation is the checkpoint's own ``image_mean`` / ``image_std`` when its
``preprocessor_config.json`` (local directory or Hugging Face cache) declares them (the google/vit-*
family uses 0.5 / 0.5), and the ImageNet statistics otherwise (DINOv2's, and ``tiny-random``'s); the
embeddings metadata records which. :meth:`Backbone.embed` runs the frozen model under
``inference_mode`` and returns float32 ``[B, dim]`` embeddings (CLS token, or CLS concatenated with
the mean patch token).

Device ``auto`` picks cuda, then mps, then cpu. Precision ``auto`` picks bf16 (autocast) on a CUDA
device with native bf16 (compute capability 8.0 or later; torch only emulates it on older cards) and
fp32 everywhere else; bf16 on CPU must be asked for (``precision: bf16``). Weights are always loaded
in float32, whatever dtype a checkpoint was saved in: the precision setting alone decides bf16.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from hashers.base import HashingError
from hashers.devices import resolve_device as _resolve_device
from pipeline.config import BackboneConfig

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
# The ImageNet-1k per-channel pixel mean and std (RGB, pixels scaled to [0, 1]) of torchvision's
# pretrained models, which facebook/dinov2-* declare in their preprocessor_config.json (as
# transformers' IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD): the default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_CONFIG = "preprocessor_config.json"
SUPPORTED_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit")

Images = np.ndarray | Sequence[np.ndarray]


class BackboneUnavailableError(ValueError):
    """The requested backbone cannot be loaded (not cached offline, missing directory, unsupported)."""


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def _to_nchw(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W]`` / ``[N, H, W, C]`` (C = 1, 2, 3, 4) -> uint8 ``[N, 3, H, W]``, channels-last;
    an alpha channel (C = 2, 4) is composited onto white."""
    if batch.ndim == 3:
        batch = batch.unsqueeze(-1)
    if batch.ndim != 4:
        raise ValueError(
            f"images must be [N, H, W] or [N, H, W, C], got shape {tuple(batch.shape)}"
        )
    channels = batch.shape[-1]
    if channels in (2, 4):  # with alpha: over white, as the Hugging Face processors composite
        alpha = batch[..., -1:].float() / 255.0
        color = batch[..., :-1].float() * alpha + 255.0 * (1.0 - alpha)
        batch = color.round().clamp(0, 255).to(torch.uint8)
        channels -= 1
    if channels == 1:  # grayscale: repeat the gray channel
        batch = batch[..., :1].expand(*batch.shape[:-1], 3)
    elif channels != 3:
        raise ValueError(f"images must have 1, 2, 3 or 4 channels, got {channels}")
    return batch.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of uint8 ``[N, 3, H, W]`` (channels-last).

    The uint8 kernel rounds like PIL's ``Image.resize(..., BICUBIC)`` (the resize of the Hugging Face
    image processors; within 1 grey level for 28 -> 224, 224 -> 28 and 300 -> 224, within 2 for
    64 -> 224 and 128 -> 224 on random images) and is much faster on CPU than the float one.
    """
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


def _pad(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Centre ``x`` on a black ``image_size``² canvas; a larger image is first downscaled (aspect kept)."""
    h, w = x.shape[-2:]
    if max(h, w) > image_size:
        scale = image_size / max(h, w)
        x = _resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))
        h, w = x.shape[-2:]
    top, left = (image_size - h) // 2, (image_size - w) // 2
    return F.pad(x, (left, image_size - w - left, top, image_size - h - top), value=0)


def _same_shape_batch(images: Images) -> np.ndarray | None:
    if isinstance(images, np.ndarray):
        return images
    shapes = {im.shape for im in images}
    return np.stack(images) if len(shapes) == 1 else None


def _normalise(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std`` in one fused pass (``x * scale + shift``)."""
    std = torch.tensor(tuple(std), dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    mean = torch.tensor(tuple(mean), dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, x.float(), 1.0 / (255.0 * std))


def preprocess(
    images: Images,
    *,
    image_size: int,
    resize: Literal["resize", "pad"] = "resize",
    device: torch.device | str = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 images -> normalised float32 ``[B, 3, image_size, image_size]`` on ``device``:
    ``(pixel / 255 - mean) / std`` per channel (ImageNet statistics unless given).

    ``images`` is one uint8 array ``[N, H, W(, C)]`` or a list of ``HxW`` / ``HxWxC`` uint8 arrays
    (shapes may differ). Grayscale is repeated to 3 channels; RGBA and LA are composited onto white. ``resize``:
    bicubic antialiased resize to ``image_size``² (aspect ratio not kept); ``pad``: zero-pad centred to
    ``image_size``² (black border in pixel space, before normalisation), downscaling first (aspect
    kept) an image larger than ``image_size``. Resizing and padding run on uint8 on the CPU (the same
    result on every device); only the ``image_size``² uint8 batch moves to ``device``, where it is
    converted to float and normalised. The result is in channels-last memory format.
    """
    if resize not in ("resize", "pad"):
        raise ValueError(f"resize must be 'resize' or 'pad', got {resize!r}")
    device = torch.device(device)
    batch = _same_shape_batch(images)
    if batch is None:  # mixed shapes: one image at a time, then stack
        return torch.cat(
            [
                preprocess(
                    im[None],
                    image_size=image_size,
                    resize=resize,
                    device=device,
                    mean=mean,
                    std=std,
                )
                for im in images
            ]
        )
    if batch.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {batch.dtype}")
    batch = np.ascontiguousarray(batch)
    if not batch.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from PIL)
        batch = batch.copy()
    x = _to_nchw(torch.from_numpy(batch))
    x = _resize(x, (image_size, image_size)) if resize == "resize" else _pad(x, image_size)
    if device.type == "cuda":
        x = x.pin_memory()
    return _normalise(x.to(device, non_blocking=True), mean, std)


# --------------------------------------------------------------------------------------------
# device and precision
# --------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    try:
        return _resolve_device(device, key="backbone.device")
    except HashingError as err:
        raise BackboneUnavailableError(str(err)) from None


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 on a CUDA device with native bf16 support, fp32 everywhere else.

    bf16 on CPU is not chosen automatically (it is slower than fp32 on many CPUs without AMX);
    ask for it with ``precision: bf16``. Neither is bf16 on a CUDA card that only emulates it
    (compute capability below 8.0, e.g. T4, V100: ``is_bf16_supported()`` counts emulation unless
    told not to), where it is slower than fp32.
    """
    if precision == "fp32":
        return "fp32"
    if precision == "bf16":
        # asked of the backbone's own device: torch.cuda.is_bf16_supported() asks the current
        # one, which on a multi-GPU box need not be the backbone's (cuda:1)
        if device.type == "cuda" and not (native_bf16(device) or _bf16_tensor_ok(device)):
            raise BackboneUnavailableError(
                f"backbone.precision: bf16 is not supported by this GPU ({device}); set "
                "backbone.precision: auto or fp32"
            )
        return "bf16"
    return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` runs bf16 natively (not emulated through fp32): compute
    capability 8.0 or more, or any ROCm device. The same rule as torch's
    ``is_bf16_supported(including_emulation=False)``, applied to ``device`` itself (torch asks
    the current device, which need not be the one the backbone runs on)."""
    if torch.version.hip is not None:
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _bf16_tensor_ok(device: torch.device) -> bool:
    """Whether a bf16 tensor can be made on the CUDA ``device`` (emulated bf16 counts): the test
    ``torch.cuda.is_bf16_supported()`` makes on the current device, made on ``device``."""
    check = getattr(torch.cuda, "_check_bf16_tensor_supported", None)  # torch's, cached per device
    if check is not None:
        return bool(check(device))
    try:  # pragma: no cover - a torch without it
        torch.ones(1, dtype=torch.bfloat16, device=device)
    except Exception:  # torch's own check treats any failure as "not supported"
        return False
    return True


# --------------------------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------------------------


@dataclass
class Backbone:
    """A frozen ViT in eval mode with its preprocessing settings.

    ``dim`` is the embedding width: the hidden size, doubled for ``pooling: cls_mean``.
    ``dtype`` is the forward precision label (``fp32`` / ``bf16``); outputs are always float32.
    ``image_mean`` / ``image_std`` normalise the pixels (see :func:`checkpoint_normalisation`);
    ``normalisation`` says where they come from: ``imagenet`` or ``preprocessor_config.json``.
    """

    model: torch.nn.Module
    name: str
    revision: str
    image_size: int
    resize: Literal["resize", "pad"]
    pooling: Literal["cls", "cls_mean"]
    device: torch.device
    dtype: Literal["fp32", "bf16"]
    hidden_size: int
    patch_size: int
    interpolate_pos_encoding: bool = False
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    normalisation: str = "imagenet"

    @property
    def dim(self) -> int:
        return self.hidden_size * (2 if self.pooling == "cls_mean" else 1)

    def preprocess(self, images: Images) -> torch.Tensor:
        """uint8 images -> normalised pixel tensor on this backbone's device (see :func:`preprocess`)."""
        return preprocess(
            images,
            image_size=self.image_size,
            resize=self.resize,
            device=self.device,
            mean=self.image_mean,
            std=self.image_std,
        )

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Float pixels ``[B, 3, H, W]`` -> float32 embeddings ``[B, dim]`` (on the backbone's device)."""
        kwargs: dict[str, Any] = (
            {"interpolate_pos_encoding": True} if self.interpolate_pos_encoding else {}
        )
        with torch.inference_mode():
            pixel_values = pixel_values.to(self.device, dtype=torch.float32, non_blocking=True)
            if self.dtype == "bf16":
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    tokens = self.model(pixel_values=pixel_values, **kwargs).last_hidden_state
            else:
                tokens = self.model(pixel_values=pixel_values, **kwargs).last_hidden_state
            tokens = tokens.float()
            cls = tokens[:, 0]
            if self.pooling == "cls":
                return cls
            n_patches = (pixel_values.shape[-2] // self.patch_size) * (
                pixel_values.shape[-1] // self.patch_size
            )
            if tokens.shape[1] <= n_patches:  # pragma: no cover - every supported ViT prepends CLS
                raise RuntimeError(f"{self.name}: {tokens.shape[1]} tokens for {n_patches} patches")
            patches = tokens[:, -n_patches:]  # CLS and register tokens come first
            return torch.cat([cls, patches.mean(dim=1)], dim=1)

    def embed_images(self, images: Images) -> torch.Tensor:
        """uint8 images -> float32 embeddings ``[B, dim]`` (preprocess + :meth:`embed`)."""
        with torch.inference_mode():
            return self.embed(self.preprocess(images))


def tiny_random_model(image_size: int, *, seed: int) -> torch.nn.Module:
    """A small seeded ``Dinov2Model`` (hidden 32, 2 layers, 2 heads, patch 14) for offline tests."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=image_size,
    )
    with torch.random.fork_rng(devices=[]):  # restores the CPU generator only: seed only that
        torch.default_generator.manual_seed(seed)
        return Dinov2Model(config)


def _hub_cause(err: BaseException) -> BaseException | None:
    """The huggingface_hub error that says the hub answered and refused (an invalid id, no such
    model or revision, a gated model) behind ``err``, which transformers wraps in an OSError;
    None when there is none (not cached and no connection)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    refusals = (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError, HFValidationError)
    seen: BaseException | None = err
    for _ in range(8):  # a short chain: transformers' OSError -> the hub's error -> the HTTP one
        if seen is None or isinstance(seen, refusals):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _hub_refusal(
    name: str, revision: str, err: BaseException, folder: str
) -> BackboneUnavailableError | None:
    """A message for a hub id or revision the hub itself refuses (a typo, a gated model): a
    network or the cache would not help, so the offline fix does not apply."""
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RevisionNotFoundError

    cause = _hub_cause(err)
    if cause is None:
        return None
    text = str(err) or str(cause)  # transformers' wording of it says more than the HTTP status
    why = f"({type(cause).__name__}: {text.splitlines()[0] if text else ''})"
    if isinstance(cause, HFValidationError):
        return BackboneUnavailableError(
            f"backbone.name: {name!r} is neither a local folder (from {Path.cwd()}) nor a valid "
            f"Hugging Face model id {why}; fix the name (an id is owner/model, e.g. "
            "facebook/dinov2-base, without spaces), or point it at a local model folder"
        )
    if isinstance(cause, GatedRepoError):
        return BackboneUnavailableError(
            f"backbone {name!r}: the Hugging Face hub refuses access to this gated model {why}; "
            f"accept its terms at https://huggingface.co/{name} and log in (`hf auth login`, or "
            "set HF_TOKEN), or set backbone.name to a model you can access"
        )
    if isinstance(cause, RevisionNotFoundError):
        return BackboneUnavailableError(
            f"backbone.revision: {revision!r} is no branch, tag or commit of model {name!r} on "
            f"the Hugging Face hub {why}; set backbone.revision to one listed at "
            f"https://huggingface.co/{name} (main, or a 40-character commit)"
        )
    return BackboneUnavailableError(  # RepositoryNotFoundError
        f"backbone.name: {folder}{name!r} is not a model on the Hugging Face hub (or a private "
        f"one this machine has no token for) {why}; fix the id (e.g. facebook/dinov2-base), log "
        "in (`hf auth login`) for a private model, or point backbone.name at a local model folder"
    )


def _unavailable(name: str, revision: str, err: BaseException) -> BackboneUnavailableError:
    local = f"models/{name.rsplit('/', 1)[-1]}"
    # `owner/model` is a hub id; when `owner` is a local folder, or the name is the local layout
    # recommended below (models/<model>), it was probably meant as a path: say it is not there
    owner = name.split("/", 1)[0] if name.count("/") == 1 else ""
    meant_local = bool(owner) and (Path(owner).is_dir() or name == local)
    folder = f"there is no local folder {name!r} (from {Path.cwd()}), and " if meant_local else ""
    refused = _hub_refusal(name, revision, err, folder)
    if refused is not None:  # the hub answered: neither the cache nor a network would help
        return refused
    reason = (
        f"backbone {name!r} (revision {revision!r}) could not be loaded: {folder}it is not in the "
        "Hugging Face cache and the hub is not reachable "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
    )
    if name == local:  # already the local layout: fill that folder, not "set backbone.name"
        fix = (
            f"Fix: on a machine with network access run `hf download <hub id, e.g. "
            f"facebook/dinov2-base> --revision {revision} --local-dir {name}` and copy the "
            f"folder here (to {Path.cwd() / name}), or set backbone.name to a hub id and run "
            "once with network access to fill the cache"
        )
    else:
        fix = (
            "Fix: run once with network access to fill the cache, or download it elsewhere with "
            f"`hf download {name} --revision {revision} --local-dir {local}` and set "
            f"backbone.name: {local}"
        )
    return BackboneUnavailableError(
        f"{reason}{fix}; for an offline smoke run only, set backbone.name: {TINY_RANDOM}"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError

        errors += [HfHubHTTPError, HFValidationError]
    except ImportError:  # pragma: no cover - very old huggingface_hub
        pass
    return tuple(errors)


def _safetensors_error() -> type[BaseException]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency of transformers
        return RuntimeError
    return SafetensorError


def _check_complete(name: str, info: dict[str, Any]) -> None:
    """Refuse a checkpoint that leaves weights of the model unset: transformers would only log them
    and initialise those layers at random, i.e. a silently partly random backbone."""
    missing = list(info.get("missing_keys") or [])
    mismatched = [
        str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []
    ]
    if missing or mismatched:
        unset = sorted(set(missing + mismatched))
        shown = ", ".join(unset[:5]) + (f" and {len(unset) - 5} more" if len(unset) > 5 else "")
        raise BackboneUnavailableError(
            f"backbone {name!r}: the checkpoint does not set {len(unset)} weight(s) of the model "
            f"({shown}); they would be random. Re-download the model, or re-save a complete one "
            "with save_pretrained"
        )


def local_commit(folder: Path) -> str | None:
    """The hub commit ``hf download <id> --local-dir <folder>`` recorded for the folder's
    ``config.json`` (huggingface_hub's ``.cache/huggingface/download/config.json.metadata``, whose
    first line is the commit hash), or None (a folder written by ``save_pretrained``, or copied
    without its ``.cache``)."""
    record = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    try:
        first = record.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return first if re.fullmatch(r"[0-9a-f]{40}", first) else None


def _local_revision(folder: Path, name: str, revision: str) -> str:
    """What the embeddings record as the revision of a local model folder: the commit its
    ``hf download`` record names (:func:`local_commit`), else ``local:<name as given>``. A
    ``backbone.revision`` commit other than the recorded one is refused (the folder holds another
    snapshot than the one pinned); a revision other than ``main`` that the folder cannot confirm
    is reported, not silently dropped."""
    commit = local_commit(folder)
    pinned = re.fullmatch(r"[0-9a-f]{40}", revision) is not None
    if commit is not None and pinned and revision != commit:
        raise BackboneUnavailableError(
            f"backbone.revision {revision}: the local folder {name} holds commit {commit} (its "
            f"hf download record); download revision {revision} into it (`hf download <id> "
            f"--revision {revision} --local-dir {name}`), or set backbone.revision: {commit}"
        )
    if commit is None and revision != "main":
        log.warning(
            "backbone %s: a local folder that records no hub commit (written by save_pretrained, "
            "or copied without its .cache/huggingface): backbone.revision %r cannot be checked "
            "against it and is not recorded; the embeddings record 'local:%s'",
            name,
            revision,
            name,
        )
    return commit or f"local:{name}"


def _load_pretrained(name: str, revision: str) -> tuple[torch.nn.Module, str]:
    """A hub id or local directory -> (model, resolved revision); unsupported types are refused."""
    from transformers import AutoConfig, AutoModel

    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and _looks_like_path(name):
        raise BackboneUnavailableError(
            f"backbone.name: local model directory {name!r} does not exist; save a model there with "
            f"save_pretrained / `hf download <id> --local-dir {name}`, or set a Hugging Face id"
        )
    source = str(local) if is_local else name
    hub_kwargs: dict[str, Any] = {} if is_local else {"revision": revision}
    if is_local and not (local / "config.json").is_file():  # transformers: an unrelated ValueError
        raise BackboneUnavailableError(
            f"backbone.name: {source} holds no config.json, so it is not a (complete) transformers "
            "model directory; copy the whole folder that `hf download <id> --local-dir` or "
            "save_pretrained wrote (config.json beside the weights)"
        )
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except _hub_errors() as err:
        if is_local:
            raise BackboneUnavailableError(
                f"backbone.name: {source} is not a transformers model directory ({err}); it needs the "
                "config.json and weights written by save_pretrained"
            ) from err
        raise _unavailable(name, revision, err) from err
    except ValueError as err:  # a config.json without a model type transformers knows
        raise BackboneUnavailableError(
            f"backbone.name: {source} is not a supported transformers model ({err}); use a ViT of type "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BackboneUnavailableError(
            f"backbone {name!r} is a {config.model_type!r} model; hashaudit supports ViT backbones of type "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (e.g. facebook/dinov2-base, facebook/dino-vitb16)"
        )
    model_kwargs: dict[str, Any] = (
        {"add_pooling_layer": False} if config.model_type == "vit" else {}
    )
    unreadable = _safetensors_error()
    try:
        # float32 whatever the checkpoint's dtype (transformers 5 loads a fp16/bf16 save as such):
        # backbone.precision alone decides bf16, through autocast in Backbone.embed
        model, info = AutoModel.from_pretrained(
            source,
            config=config,
            output_loading_info=True,
            dtype=torch.float32,
            **hub_kwargs,
            **model_kwargs,
        )
    except _hub_errors() as err:
        if is_local:
            raise BackboneUnavailableError(
                f"backbone.name: {source}: cannot load the weights ({err}); re-save the model with save_pretrained"
            ) from err
        raise _unavailable(name, revision, err) from err
    except (RuntimeError, unreadable) as err:  # corrupt file, or weights of another shape
        if not isinstance(err, unreadable) and "mismatch" not in str(err).lower():
            raise  # any other RuntimeError (out of memory, a bug) keeps its traceback
        first = str(err).splitlines()[0] if str(err) else ""
        raise BackboneUnavailableError(
            f"backbone {name!r}: its weights are unreadable or do not fit its config.json "
            f"({type(err).__name__}: {first}); re-download the model, or re-save it with save_pretrained"
        ) from err
    _check_complete(name, info)
    if is_local:
        return model, _local_revision(local, name, revision)
    commit = (
        getattr(model.config, "_commit_hash", None)
        or getattr(config, "_commit_hash", None)
        or _cached_commit(name, revision)
    )
    if not commit:
        log.warning(
            "backbone %s: no commit found for revision %r in the Hugging Face cache; recording the "
            "revision as given",
            name,
            revision,
        )
    return model, str(commit or revision)


def _cached_commit(name: str, revision: str) -> str | None:
    """The commit of hub model ``name`` at ``revision`` in the local Hugging Face cache: the snapshot
    folder its ``config.json`` was loaded from (``.../snapshots/<commit>/config.json``); transformers 5
    no longer records it as ``config._commit_hash``. None when the cache does not tell."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id=name, filename="config.json", revision=revision)
    if not isinstance(path, str):  # None (not cached) or the "known not to exist" marker
        return None
    folder = Path(path).parent
    commit = folder.name
    if folder.parent.name != "snapshots" or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    return commit


def _channel_values(value: Any, key: str, path: Path) -> tuple[float, float, float]:
    """``image_mean`` / ``image_std`` of a preprocessor config: 3 finite numbers (one number is
    used for all three channels, as transformers' image processors do)."""
    values = [value] * 3 if isinstance(value, int | float) else value
    ok = (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        and all(math.isfinite(v) for v in values)
    )
    if not ok:
        raise BackboneUnavailableError(
            f"{path}: {key} is {value!r}; it must be 3 finite numbers (one per RGB channel, pixels "
            f"scaled to [0, 1]), e.g. {list(IMAGENET_MEAN)}; fix the file or remove it (ImageNet "
            "statistics are then used)"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def read_normalisation(
    path: Path,
) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """``(image_mean, image_std)`` declared by a checkpoint's ``preprocessor_config.json``; None
    when it declares neither (ImageNet statistics apply). ``do_normalize: false`` is mean 0 and
    std 1, as the checkpoint's own image processor does it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackboneUnavailableError(
            f"{path}: unreadable preprocessor config ({type(err).__name__}: {err}); re-download the "
            "model, or re-save its image processor with save_pretrained"
        ) from err
    if not isinstance(config, dict):
        raise BackboneUnavailableError(
            f"{path}: a preprocessor config is a JSON object, got {type(config).__name__}; "
            "re-download the model, or re-save its image processor with save_pretrained"
        )
    rescale = config.get("rescale_factor", 1 / 255)
    if config.get("do_rescale", True) is False or not (
        isinstance(rescale, int | float) and math.isclose(rescale, 1 / 255, rel_tol=1e-6)
    ):
        raise BackboneUnavailableError(
            f"{path}: the checkpoint scales pixels by do_rescale={config.get('do_rescale', True)!r}, "
            f"rescale_factor={rescale!r}; hashaudit scales them to [0, 1] (1/255) before "
            "normalising: use a checkpoint that does the same"
        )
    if config.get("do_normalize", True) is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    has_mean, has_std = "image_mean" in config, "image_std" in config
    if not has_mean and not has_std:
        return None
    if has_mean != has_std:
        given, missing = ("image_mean", "image_std") if has_mean else ("image_std", "image_mean")
        raise BackboneUnavailableError(
            f"{path}: declares {given} but not {missing}; add {missing} (3 numbers) or remove both "
            "(ImageNet statistics are then used)"
        )
    mean = _channel_values(config["image_mean"], "image_mean", path)
    std = _channel_values(config["image_std"], "image_std", path)
    if min(std) <= 0:
        raise BackboneUnavailableError(
            f"{path}: image_std is {config['image_std']!r}; every channel's std must be > 0 (pixels "
            "are divided by it); fix the file or remove it (ImageNet statistics are then used)"
        )
    return mean, std


def _preprocessor_config(name: str, revision: str) -> Path | None:
    """The ``preprocessor_config.json`` of a checkpoint: in its local directory, else in the
    Hugging Face cache (fetched when the hub is reachable); None when it has none."""
    local = Path(name).expanduser()
    if local.is_dir():
        path = local / PREPROCESSOR_CONFIG
        if not path.is_file():  # model.save_pretrained alone does not write it
            log.warning(
                "backbone %s: the folder holds no %s; normalising with the ImageNet statistics. "
                "If the checkpoint expects others (google/vit-*: 0.5/0.5), save its image "
                "processor there too (AutoImageProcessor.from_pretrained(<hub id>)"
                ".save_pretrained(<folder>), or hf download <hub id> --local-dir <folder>)",
                name,
                PREPROCESSOR_CONFIG,
            )
            return None
        return path
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id=name, filename=PREPROCESSOR_CONFIG, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None:  # the cache knows the checkpoint has none
        return None
    try:
        return Path(hf_hub_download(name, PREPROCESSOR_CONFIG, revision=revision))
    except LocalEntryNotFoundError:  # offline (or unreachable), and not cached
        log.warning(
            "backbone %s: its %s is not in the Hugging Face cache and the hub is not reachable; "
            "normalising with the ImageNet statistics. If the checkpoint declares other "
            "image_mean/image_std, run once with network access to cache the file",
            name,
            PREPROCESSOR_CONFIG,
        )
        return None
    except EntryNotFoundError:  # the checkpoint has none
        return None
    except _hub_errors() as err:
        log.warning(
            "backbone %s: could not fetch its %s (%s: %s); normalising with the ImageNet statistics",
            name,
            PREPROCESSOR_CONFIG,
            type(err).__name__,
            err,
        )
        return None


def checkpoint_normalisation(
    name: str, revision: str
) -> tuple[tuple[float, float, float], tuple[float, float, float], str]:
    """``(mean, std, source)`` to normalise the pixels fed to checkpoint ``name``: those its
    ``preprocessor_config.json`` declares (source ``preprocessor_config.json``), else the ImageNet
    statistics (source ``imagenet``)."""
    path = _preprocessor_config(name, revision)
    declared = None if path is None else read_normalisation(path)
    if declared is None:
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    return declared[0], declared[1], PREPROCESSOR_CONFIG


def load_backbone(config: BackboneConfig, *, seed: int = 0) -> Backbone:
    """Load the frozen backbone described by ``config`` (see the module docstring for the names)."""
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    if config.name == TINY_RANDOM:
        log.warning(
            "backbone %s: a randomly initialised model for tests and smoke runs; its embeddings are "
            "MEANINGLESS, do not report results computed from them",
            TINY_RANDOM,
        )
        model: torch.nn.Module = tiny_random_model(config.image_size, seed=seed)
        revision = f"{TINY_RANDOM}-seed{seed}"
        mean, std, normalisation = IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    else:
        model, revision = _load_pretrained(config.name, config.revision)
        # the same snapshot as the weights: a local dir, else the commit they were loaded at
        at = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else config.revision
        mean, std, normalisation = checkpoint_normalisation(config.name, at)
    model.eval().requires_grad_(False).to(device)
    mcfg = model.config
    patch = mcfg.patch_size if isinstance(mcfg.patch_size, int) else int(mcfg.patch_size[0])
    native = mcfg.image_size if isinstance(mcfg.image_size, int) else int(mcfg.image_size[0])
    if config.image_size < patch:
        raise BackboneUnavailableError(
            f"backbone.image_size: {config.image_size} is smaller than the {patch}-pixel patch of "
            f"backbone {config.name!r}, so the model would see no patch; set backbone.image_size to "
            f"at least {patch}, best a multiple of {patch}"
        )
    if config.image_size % patch:
        log.warning(
            "backbone.image_size %d is not a multiple of the patch size %d: the last %d pixel rows/columns "
            "are not seen by the model",
            config.image_size,
            patch,
            config.image_size % patch,
        )
    backbone = Backbone(
        model=model,
        name=config.name,
        revision=revision,
        image_size=config.image_size,
        resize=config.resize,
        pooling=config.pooling,
        device=device,
        dtype=dtype,
        hidden_size=int(mcfg.hidden_size),
        patch_size=patch,
        interpolate_pos_encoding=mcfg.model_type == "vit" and config.image_size != native,
        image_mean=mean,
        image_std=std,
        normalisation=normalisation,
    )
    log.info(
        "backbone %s @ %s on %s (%s), image %d px (%s), pooling %s, dim %d, normalisation %s "
        "(mean %s, std %s)",
        backbone.name,
        backbone.revision,
        device,
        dtype,
        config.image_size,
        config.resize,
        config.pooling,
        backbone.dim,
        normalisation,
        list(mean),
        list(std),
    )
    return backbone
