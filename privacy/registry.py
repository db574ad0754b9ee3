"""Registry of privacy attacks: ``name -> class``.

Adding an attack = one module in ``privacy/`` implementing :class:`privacy.base.Attack`, one line in
``_ATTACKS`` below and its name in ``attack.attacks`` of ``params.yaml``. Classes are imported lazily.
The order of this table is the order the attack stage runs them in.
"""

from __future__ import annotations

from typing import Any

from hashers.registry import LazyTable
from privacy.base import Attack, Release
from privacy.errors import PrivacyError

_ATTACKS = LazyTable(
    {
        "linkage": "privacy.linkage:Linkage",
        "anonymity": "privacy.anonymity:Anonymity",
        "inversion": "privacy.inversion:Inversion",
        "reconstruction": "privacy.reconstruction:Reconstruction",
        "attribute": "privacy.attribute:AttributeInference",
        "membership": "privacy.membership:MembershipInference",
    },
    what="attack",
    error=PrivacyError,
)


def names() -> list[str]:
    """Registered attack names, in run order."""
    return _ATTACKS.names()


def get(name: str) -> type[Attack]:
    return _ATTACKS.get(name)


def build(
    name: str, release: Release, config: Any | None = None, *, seed: int = 0, **context: Any
) -> Attack:
    """Instantiate attack ``name`` on ``release``; ``context`` goes to attacks that take it."""
    cls = get(name)
    if context and name == "membership":
        return cls(release, config, seed=seed, **context)
    return cls(release, config, seed=seed)
