"""Binary codes: packing to bytes and exact Hamming distances.

Packing uses numpy's little bit order (bit j of a code is bit ``j % 8`` of byte ``j // 8``) and pads
the last byte with zeros; the true code length travels beside the bytes (``n_bits``), so 12-bit or
36-bit codes round-trip exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def pack_bits(bits: np.ndarray | Tensor) -> np.ndarray:
    """``bool [N, K]`` -> ``uint8 [N, ceil(K/8)]``.

    Only booleans: ``±1`` signs or real outputs ``u`` would otherwise pack every non-zero value
    as 1 (the bit rule is ``u > 0``: :func:`to_signs`, ``HashingMethod.encode``)."""
    arr = bits.cpu().numpy() if isinstance(bits, Tensor) else np.asarray(bits)
    if arr.ndim != 2:
        raise ValueError(f"codes must be [N, K], got shape {arr.shape}")
    if arr.dtype != np.bool_:
        raise TypeError(f"pack_bits takes bool codes, got {arr.dtype}; binarise first (u > 0)")
    return np.packbits(arr, axis=1, bitorder="little")


def unpack_bits(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """``uint8 [N, ceil(K/8)]`` -> ``bool [N, K]`` (inverse of :func:`pack_bits`)."""
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(f"packed codes must be uint8 [N, B], got {packed.dtype} {packed.shape}")
    if packed.shape[1] != math.ceil(n_bits / 8):
        raise ValueError(f"{packed.shape[1]} bytes per code cannot hold exactly {n_bits} bits")
    return np.unpackbits(packed, axis=1, count=n_bits, bitorder="little").astype(bool)


def to_signs(values: np.ndarray | Tensor) -> Tensor:
    """``±1`` tensor of ``values``: ``+1`` where ``value > 0``, ``-1`` elsewhere, **zero included**.

    The one sign rule of the project, the same as the bit rule of ``HashingMethod.encode``
    (bit = ``u > 0``), so ``to_signs(u)`` and ``to_signs(bits)`` agree: bits (``bool``; ``True`` is
    ``+1``) give float32, real tensors keep their floating dtype (e.g. float64 in ITQ). (The trainer's
    binary *targets* use ``hashers.functional.sign_with_ties``, ``sign(0) = +1``: another job.)
    """
    # order="C" copies a view torch cannot share (negative strides, e.g. ``u[::-1]``)
    t = values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values, order="C"))
    dtype = t.dtype if t.is_floating_point() else torch.float32
    return torch.where(t > 0, 1.0, -1.0).to(dtype)


def hamming_from_signs(q: Tensor, db: Tensor) -> Tensor:
    """Hamming distances between ±1 code matrices: ``(K - q·db) / 2`` (exact in float32 for K ≤ 2^24)."""
    k = q.shape[1]
    return torch.round((k - q @ db.T) * 0.5)


def hamming_distances(q_packed: np.ndarray, db_packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Exact Hamming distance matrix ``int32 [Nq, Ndb]`` between packed codes."""
    q = to_signs(unpack_bits(q_packed, n_bits))
    db = to_signs(unpack_bits(db_packed, n_bits))
    return hamming_from_signs(q, db).numpy().astype(np.int32)


def iter_hamming_chunks(
    q_packed: np.ndarray, db_packed: np.ndarray, n_bits: int, *, chunk: int = 1024
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(query slice, float32 distances [chunk, Ndb])`` without holding the full matrix."""
    db = to_signs(unpack_bits(db_packed, n_bits))
    q_all = to_signs(unpack_bits(q_packed, n_bits))
    for start in range(0, q_all.shape[0], chunk):
        sl = slice(start, min(start + chunk, q_all.shape[0]))
        yield sl, hamming_from_signs(q_all[sl], db).numpy()


def check_codes(q_packed: np.ndarray | None, db_packed: np.ndarray, n_bits: int) -> None:
    """Raise :class:`~retrieval.errors.RetrievalError` unless both sides are ``uint8 [*, ceil(K/8)]``
    codes of the same ``n_bits`` with at least one query and one database item (``q_packed=None``:
    check the database alone)."""
    from retrieval.errors import RetrievalError

    n_bytes = math.ceil(n_bits / 8) if n_bits > 0 else 0
    sides = (
        [("database", db_packed)]
        if q_packed is None
        else [("query", q_packed), ("database", db_packed)]
    )
    for what, arr in sides:
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2:
            raise RetrievalError(
                f"{what} codes must be packed uint8 [N, bytes] (retrieval.codes.pack_bits), got "
                f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
            )
    if n_bits < 1:
        raise RetrievalError(f"n_bits={n_bits} must be >= 1")
    if db_packed.shape[1] != n_bytes:
        raise RetrievalError(
            f"database codes have {db_packed.shape[1]} bytes but {n_bits}-bit codes take {n_bytes}; "
            "pass the n_bits the codes were made with"
        )
    if len(db_packed) == 0:
        raise RetrievalError("the database is empty; pass at least one database code")
    if q_packed is not None and q_packed.shape[1] != db_packed.shape[1]:
        raise RetrievalError(
            f"query codes have {q_packed.shape[1]} bytes and database codes {db_packed.shape[1]} "
            f"bytes, but {n_bits}-bit codes take {n_bytes}; encode queries and database with the "
            "same head (same bit length)"
        )
    if q_packed is not None and len(q_packed) == 0:
        raise RetrievalError("the query set is empty; pass at least one query code")
    for what, arr in sides:
        if n_bits % 8 and (arr[:, -1] >> np.uint8(n_bits % 8)).any():
            raise RetrievalError(
                f"{what} codes have bits set beyond bit {n_bits} (the padding of the last byte): "
                f"they are longer than {n_bits} bits; encode queries and database with the same head"
            )


def pad_to_words(packed: np.ndarray, n_bits: int, *, word_bytes: int = 8) -> np.ndarray:
    """Codes padded with zero bytes to a multiple of ``word_bytes`` (faiss' fast Hamming kernels
    exist for 8, 16, 32 and 64 bytes), with the padding bits of the last code byte cleared.

    Zero padding on both the query and the database side leaves every Hamming distance unchanged.
    """
    n_bytes = packed.shape[1]
    width = max(word_bytes, -(-n_bytes // word_bytes) * word_bytes)
    out = np.zeros((packed.shape[0], width), dtype=np.uint8)
    out[:, :n_bytes] = packed
    if n_bits % 8:
        out[:, n_bytes - 1] &= np.uint8((1 << (n_bits % 8)) - 1)
    return out
