"""Which torch device a setting names (shared by training and the backbone of the extract stage)."""

from __future__ import annotations

import torch

from hashers.errors import HashingError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str, *, key: str = "train.device") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit but unavailable device (``cuda``,
    ``cuda:1`` on a box without that GPU, ``mps``), or a name other than ``auto``, ``cpu``,
    ``cuda[:<index>]`` and ``mps`` (``gpu``, ``CUDA``, ``meta``, ``xpu``), is an error naming
    ``key`` (the parameter that asked for it)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's parse error names neither the key nor the choices
        device = None
    # other types (meta, xpu, hip, ...) were accepted and failed later inside torch, or (meta)
    # computed nothing
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise HashingError(
            f"{key}: {name!r} is not a device hashaudit runs on; use auto, cpu, cuda, "
            "cuda:<index> or mps"
        )
    if device.type == "cuda":
        # an index names one GPU: cuda:1 on a one-GPU box is as unavailable as cuda on none
        unavailable = not torch.cuda.is_available() or (
            device.index is not None and device.index >= torch.cuda.device_count()
        )
    else:
        unavailable = device.type == "mps" and not (_mps_available() and not device.index)
    if unavailable:
        raise HashingError(f"{key}: {name} is not available here; set {key}: auto or cpu")
    return device
