"""Registry of hashing methods: ``name -> class``.

Adding a method = one file in ``hashers/``, one line in ``_METHODS`` below and one block under
``methods:`` in ``params.yaml``. Classes are imported lazily, so listing names is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from hashers.base import HashingError, HashingMethod, HeadSpec

_METHODS: dict[str, str] = {
    "dpsh": "hashers.dpsh:DPSH",
    "dsh": "hashers.dsh:DSH",
    "cnnh": "hashers.cnnh:CNNH",
    "dhn": "hashers.dhn:DHN",
    "hashnet": "hashers.hashnet:HashNet",
    "dsdh": "hashers.dsdh:DSDH",
    "lsh": "hashers.baselines:LSH",
    "itq": "hashers.baselines:ITQ",
    "pca": "hashers.baselines:PCARR",
    "dnnh": "hashers.dnnh:DNNH",
    "dshgan": "hashers.dshgan:DSHGAN",
    "tcl": "hashers.tcl:TCL",
    "saeh": "hashers.saeh:SAEH",
    "csq": "hashers.csq:CSQ",
}


def names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get(name: str) -> type[HashingMethod]:
    """The class registered as ``name``; a clear error lists the registered names otherwise."""
    if name not in _METHODS:
        raise HashingError(f"unknown hashing method {name!r}; registered: {', '.join(names())}")
    module, _, attr = _METHODS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.name != name:  # pragma: no cover - guards the table above
        raise HashingError(f"registry entry {name!r} points at a class named {cls.name!r}")
    return cls


def build(name: str, spec: HeadSpec, config: Any | None = None, *, seed: int = 0) -> HashingMethod:
    """Instantiate method ``name`` with its parameters initialised from ``seed`` (reproducible)."""
    cls = get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(spec, config)
