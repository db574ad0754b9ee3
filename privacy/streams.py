"""Seed sequences of the defences' private randomness (DP-SGD heads, randomised response).

One rule for both: ``seed=None`` draws fresh OS entropy (``numpy.random.SeedSequence()``), which is
recorded nowhere; an integer seed is followed by the SHA-256 words of ``context``'s canonical JSON
(what is being protected: dataset, method, settings, split, ...), so two runs that differ in any
entry of the context never share a stream, and the same (seed, context) gives the same stream on
every platform. See privacy/DEFENCES.md for what a recorded seed costs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from privacy.errors import PrivacyError


def seed_sequence(seed: int | None, context: Mapping[str, Any]) -> np.random.SeedSequence:
    """OS entropy for ``seed=None``; else ``seed`` followed by the SHA-256 words of ``context``."""
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        # int() made 1.5 (and True) the stream of seed 1; a negative seed failed inside numpy
        raise PrivacyError(
            f"seed {seed!r}: use a non-negative integer, or None for fresh OS entropy"
        )
    text = json.dumps({str(k): v for k, v in context.items()}, sort_keys=True, default=_stable)
    words = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), dtype="<u4").tolist()
    return np.random.SeedSequence([int(seed), *words])


def _stable(value: Any) -> Any:
    """The JSON stand-in of a context value JSON has no type for: a set in sorted order (its
    iteration order, and so ``str``, changes with each process's string-hash seed), else ``str``;
    a value whose text holds a memory address (``<... at 0x...>``) is refused."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True, default=_stable))
    text = str(value)
    if re.search(r" at 0x[0-9a-fA-F]+>", text):  # an object, function or method by address
        raise PrivacyError(
            f"seed context value {text}: its text is a memory address, so the stream would "
            "change with every run; put a number, string, list or dict in the context instead"
        )
    return text
