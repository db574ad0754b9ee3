"""Bit packing and Hamming distances against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import hamming_distances, iter_hamming_chunks, pack_bits, unpack_bits


@pytest.mark.parametrize("n_bits", [8, 12, 16, 24, 32, 36, 48, 64, 1024])
def test_pack_round_trip_any_length(n_bits: int) -> None:
    bits = np.random.default_rng(n_bits).random((7, n_bits)) > 0.5
    packed = pack_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (7, -(-n_bits // 8))
    assert np.array_equal(unpack_bits(packed, n_bits), bits)


def test_packing_is_little_bit_order_with_zero_padding() -> None:
    bits = np.zeros((1, 12), dtype=bool)
    bits[0, 0] = bits[0, 9] = True  # bit 0 of byte 0, bit 1 of byte 1
    assert pack_bits(bits).tolist() == [[1, 2]]


def test_hamming_matches_brute_force() -> None:
    g = np.random.default_rng(0)
    q, db = g.random((5, 36)) > 0.5, g.random((9, 36)) > 0.5
    brute = (q[:, None, :] != db[None, :, :]).sum(-1)
    assert np.array_equal(hamming_distances(pack_bits(q), pack_bits(db), 36), brute)
    chunks = np.concatenate(
        [d for _, d in iter_hamming_chunks(pack_bits(q), pack_bits(db), 36, chunk=2)]
    )
    assert np.array_equal(chunks, brute)


def test_unpack_rejects_wrong_byte_count() -> None:
    with pytest.raises(ValueError, match="cannot hold exactly 24 bits"):
        unpack_bits(np.zeros((2, 2), dtype=np.uint8), 24)


def test_to_signs_one_zero_rule_for_bits_and_reals() -> None:
    import torch

    from retrieval.codes import to_signs

    bits = np.array([[True, False, True]])
    assert to_signs(bits).tolist() == [[1.0, -1.0, 1.0]] and to_signs(bits).dtype == torch.float32
    reals = torch.tensor([[0.5, 0.0, -0.0, -2.0]], dtype=torch.float64)
    signs = to_signs(reals)
    assert signs.tolist() == [[1.0, -1.0, -1.0, -1.0]] and signs.dtype == torch.float64  # 0 -> -1
    # the bits of a real code (u > 0) have the same signs as the code itself
    assert torch.equal(to_signs((reals > 0).numpy()).double(), signs)


@pytest.mark.parametrize(
    "values", [np.array([[1, -1, -1, 1]]), np.array([[0.3, -0.2, -1e-3, 0.0]]), np.eye(2, 4)]
)
def test_pack_refuses_signs_reals_and_integers(values: np.ndarray) -> None:
    # np.packbits would pack every non-zero as 1: [1, -1, -1, 1] would become 1111, not 1001
    with pytest.raises(TypeError, match="bool codes"):
        pack_bits(values)


def test_to_signs_takes_negative_stride_views() -> None:
    """torch.from_numpy refuses negative strides: ``to_signs(u[::-1])`` was a ValueError."""
    from retrieval.codes import to_signs

    u = np.array([[0.5, -1.0], [2.0, 0.0]], dtype=np.float32)
    assert to_signs(u[::-1]).tolist() == [[1.0, -1.0], [1.0, -1.0]]
    assert to_signs(u[:, ::-1]).tolist() == [[-1.0, 1.0], [-1.0, 1.0]]
