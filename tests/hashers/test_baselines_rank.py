"""ITQ / PCA-RR on training rows of too low a rank, and LSH.encode_tables' inputs (review 2)."""

from __future__ import annotations

import pytest
import torch

from hashers import baselines as B
from hashers import registry
from hashers.base import EmbeddingSet, HashingError, HeadSpec


def spec(in_dim: int, bits: int) -> HeadSpec:
    return HeadSpec(in_dim=in_dim, n_bits=bits, n_classes=2)


def unlabelled(x: torch.Tensor) -> EmbeddingSet:
    y = torch.zeros(x.shape[0], 2)
    y[:, 0] = 1
    return EmbeddingSet(x.float(), y)


def plane_rows(n: int) -> torch.Tensor:
    """``n`` rows ``(a, b, 7, 7, 7, 7)`` with small integer a, b (exact in float32): once
    centred they vary along exactly 2 directions, e1 and e2; columns 3-6 are constant."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 6), 7.0)
    x[:, :2] = torch.randint(-5, 6, (n, 2), generator=g).float()
    return x


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_a_bit_beyond_the_rank_of_the_training_rows_is_refused_not_arbitrary(name: str) -> None:
    # 40 rows, 3 bits: more rows than bits (the n <= n_bits rule passes), but the rows span 2
    # directions, so the 3rd component has training variance 0 and eigh returned an arbitrary
    # unit vector of span(e3..e6) for it: a bit that is constant (0) on every training row and
    # set by columns 3-6 on a new row, which the training rows never varied
    x = plane_rows(40)
    _, _, var = B.pca(x, 3)
    assert float(var[2]) == pytest.approx(0.0, abs=1e-12) and float(var[1]) > 1.0
    method = registry.build(name, spec(6, 3))
    with pytest.raises(
        HashingError,
        match=r"the 40 training embeddings, once centred, vary along only 2 direction\(s\) "
        r"\(principal variance .* at component 3 of 3.*use at most 2 bits \(or LSH\)",
    ):
        method.on_fit_start(unlabelled(x))
    # 2 bits read exactly the two directions the rows vary along: columns 3-6 move no bit
    two = registry.build(name, spec(6, 2))
    two.on_fit_start(unlabelled(x))
    new = torch.tensor([[1.5, -2.5, 7.0, 7.0, 7.0, 7.0]])
    moved = new.clone()
    moved[0, 2:] = torch.tensor([-40.0, 90.0, 3.0, -60.0])
    assert torch.equal(two.encode(new), two.encode(moved))
    assert torch.allclose(two.head.components[2:].abs(), torch.zeros(4, 2), atol=1e-6)


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_all_identical_training_rows_are_refused(name: str) -> None:
    # every row the same: no direction at all (the head encoded every training row as all-0 bits
    # and new rows by arbitrary directions)
    method = registry.build(name, spec(6, 2))
    with pytest.raises(HashingError, match=r"vary along only 0 direction\(s\).*use LSH"):
        method.on_fit_start(unlabelled(torch.full((10, 6), 3.25)))
    assert torch.equal(method.head.components, torch.zeros(6, 2))  # nothing was stored


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_full_rank_rows_far_from_the_origin_still_fit(name: str) -> None:
    # the floor is float32's rounding of the data (eps32 * max|x|)^2: an offset of 1000 puts it
    # at 1.5e-8, far below the smallest real variance here (~0.05), so nothing is refused
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 8, generator=g) * torch.linspace(2.0, 0.3, 8) + 1000.0
    method = registry.build(name, spec(8, 8))
    method.on_fit_start(unlabelled(x))
    _, _, var = B.pca(x, 8)
    assert float(var[-1]) > 0.03
    assert float(B.column_mean(x)[0]) == pytest.approx(1000.0, abs=0.5)


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_encode_tables_refuses_a_batch_size_below_one(bad: object) -> None:
    # -1 returned [T, 0, K] codes for 5 rows, 0 a bare "range() arg 3 must not be zero"
    m = registry.build("lsh", spec(4, 3), B.LSHConfig(tables=2))
    m.on_fit_start(unlabelled(torch.randn(5, 4, generator=torch.Generator().manual_seed(1))))
    with pytest.raises(HashingError, match=rf"encode_tables batch_size={bad!r} must be an integer"):
        m.encode_tables(torch.zeros(5, 4), batch_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2, 5, 4), (4,), (5, 3)])
def test_encode_tables_refuses_inputs_of_another_shape(shape: tuple[int, ...]) -> None:
    # [2, 5, 4] broadcast against the 2 tables into bool [2, 5, 3] (read as 2 tables of 5 rows),
    # [4] gave [2, 3]: codes of another shape and meaning
    m = registry.build("lsh", spec(4, 3), B.LSHConfig(tables=2))
    with pytest.raises(HashingError, match=r"encode_tables takes embeddings \[N, 4\]"):
        m.encode_tables(torch.zeros(shape))
    # a right input: table t's bit j is [w_tj . (x - mean) > 0], checked by hand
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    codes = m.encode_tables(x, batch_size=1)
    assert torch.equal(codes, torch.einsum("nd,tdk->tnk", x, m.head.planes) > 0)
    assert codes.shape == (2, 2, 3)
