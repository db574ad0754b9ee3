"""The error class of the hashing library (light: no torch import)."""

from __future__ import annotations


class HashingError(ValueError):
    """Bad input to a hashing method (shapes, labels, non-finite values)."""
