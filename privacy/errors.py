"""The error class of the privacy library."""

from __future__ import annotations


class PrivacyError(ValueError):
    """Bad input to an attack, a defence or an audit (too little auxiliary data, a bad ε, ...)."""
