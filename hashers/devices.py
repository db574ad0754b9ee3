"""Which torch device a setting names (shared by training and the backbone of the extract stage)."""

from __future__ import annotations

import torch

from hashers.errors import HashingError


def resolve_device(name: str, *, key: str = "train.device") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit but unavailable device is an error
    naming ``key`` (the parameter that asked for it)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    unavailable = (name == "cuda" and not torch.cuda.is_available()) or (
        name == "mps"
        and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )
    if unavailable:
        raise HashingError(f"{key}: {name} is not available here; set {key}: auto or cpu")
    return torch.device(name)
