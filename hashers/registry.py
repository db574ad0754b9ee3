"""Registry of hashing methods: ``name -> class``.

Adding a method = one file in ``hashers/``, one line in the ``_METHODS`` table below and one block under
``methods:`` in ``params.yaml``. Classes are imported lazily, so listing names is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from hashers.base import SEED_LIMIT, HashingError, HashingMethod, HeadSpec, is_integer


class LazyTable:
    """``name -> "module:Class"`` resolved on first use, so listing names imports nothing.

    The one lookup behind both registries (hashing methods here, attacks in ``privacy.registry``):
    an unknown name raises ``error`` listing the registered names, and an entry whose class
    carries another ``name`` is caught (it guards the table, not user input).
    """

    def __init__(self, entries: dict[str, str], *, what: str, error: type[Exception]) -> None:
        self.entries, self.what, self.error = dict(entries), what, error

    def names(self) -> list[str]:
        """Registered names, in table order."""
        return list(self.entries)

    def get(self, name: str) -> Any:
        """The class registered as ``name``."""
        if name not in self.entries:
            raise self.error(f"unknown {self.what} {name!r}; registered: {', '.join(self.names())}")
        module, _, attr = self.entries[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if cls.name != name:  # pragma: no cover - guards the table
            raise self.error(f"registry entry {name!r} points at a class named {cls.name!r}")
        return cls


_METHODS = LazyTable(
    {
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
    },
    what="hashing method",
    error=HashingError,
)


def names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS.names())


def get(name: str) -> type[HashingMethod]:
    """The class registered as ``name``; a clear error lists the registered names otherwise."""
    return _METHODS.get(name)


def build(name: str, spec: HeadSpec, config: Any | None = None, *, seed: int = 0) -> HashingMethod:
    """Instantiate method ``name`` with its parameters initialised from ``seed`` (reproducible), an
    integer from 0 to 2**64 - 1 (numpy's integers too; seeds derived from a params seed, such as
    the membership attack's shadow seeds ``attack.seed + 1 + i``, may pass 2**63)."""
    # np.int64 seeds failed in torch ("an integer is required"), and torch maps a negative seed
    # s to 2**64 + s: seed -1 built the head of seed 2**64 - 1
    if not is_integer(seed) or not 0 <= seed < SEED_LIMIT:
        raise HashingError(f"seed={seed!r}: use an integer from 0 to 2**64 - 1 = {SEED_LIMIT - 1}")
    cls = get(name)
    with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
        torch.default_generator.manual_seed(int(seed))  # only it (torch.manual_seed: CUDA too)
        return cls(spec, config)
