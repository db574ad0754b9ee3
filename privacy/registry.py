"""Registry of privacy attacks: ``name -> class``.

Adding an attack = one module in ``privacy/`` implementing :class:`privacy.base.Attack`, one line in
``_ATTACKS`` below and its name in ``attack.attacks`` of ``params.yaml``. Classes are imported lazily.
The order of this table is the order the attack stage runs them in.
"""

from __future__ import annotations

import importlib
from typing import Any

from privacy.base import Attack, Release
from privacy.errors import PrivacyError

_ATTACKS: dict[str, str] = {
    "linkage": "privacy.linkage:Linkage",
    "anonymity": "privacy.anonymity:Anonymity",
    "inversion": "privacy.inversion:Inversion",
    "reconstruction": "privacy.reconstruction:Reconstruction",
    "attribute": "privacy.attribute:AttributeInference",
    "membership": "privacy.membership:MembershipInference",
}


def names() -> list[str]:
    """Registered attack names, in run order."""
    return list(_ATTACKS)


def get(name: str) -> type[Attack]:
    if name not in _ATTACKS:
        raise PrivacyError(f"unknown attack {name!r}; registered: {', '.join(names())}")
    module, _, attr = _ATTACKS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.name != name:  # pragma: no cover - guards the table above
        raise PrivacyError(f"registry entry {name!r} points at a class named {cls.name!r}")
    return cls


def build(
    name: str, release: Release, config: Any | None = None, *, seed: int = 0, **context: Any
) -> Attack:
    """Instantiate attack ``name`` on ``release``; ``context`` goes to attacks that take it."""
    cls = get(name)
    if context and name == "membership":
        return cls(release, config, seed=seed, **context)
    return cls(release, config, seed=seed)
