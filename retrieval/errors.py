"""The error class of the retrieval library."""

from __future__ import annotations


class RetrievalError(ValueError):
    """Bad input to a retrieval routine: mismatched code lengths, empty sets, k out of range."""
