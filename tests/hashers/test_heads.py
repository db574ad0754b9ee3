"""Head building blocks: the input standardiser (fixed statistics, by-hand values)."""

from __future__ import annotations

import torch

from hashers.heads import InputStandardizer, MLPHead


def test_input_standardizer_uses_fixed_statistics_and_drops_constant_columns() -> None:
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    st = InputStandardizer(3)
    assert torch.equal(st(x), x)  # identity before fit
    st.fit(x)
    z = st(x)
    # by hand: column 0 mean 3, std sqrt(8/3); column 1 constant -> 0 after centring
    assert torch.allclose(z[:, 0], torch.tensor([-2.0, 0.0, 2.0]) / (8 / 3) ** 0.5)
    assert torch.equal(z[:, 1], torch.zeros(3))
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-6)
    # a new record off the constant column: the column is dropped (inv_scale 0), not blown up by
    # 1 / (1e-3 x mean std) (~ 600 here) as it was
    assert float(st.inv_scale[1]) == 0.0
    out = st(torch.tensor([[3.0, 5.5, 5.0]]))
    assert torch.isfinite(out).all() and float(out[0, 1]) == 0.0
    # statistics are buffers: they travel with the state dict, not with the optimiser
    assert set(dict(st.named_buffers())) == {"center", "inv_scale"} and not list(st.parameters())


def test_standardizing_head_is_invariant_to_a_shared_offset() -> None:
    """Adding one vector to every row changes nothing once the head standardises (LayerNorm alone
    is not invariant to it), which is why heads standardise on offset-dominated features."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    shift = 10 * torch.randn(8, generator=g)
    heads = []
    for data in (x, x + shift):
        torch.manual_seed(0)
        head = MLPHead(in_dim=8, out_dim=4, hidden_dims=(16,), standardize=True)
        head.net[0].fit(data)
        heads.append(head(data))
    assert torch.allclose(heads[0], heads[1], atol=1e-5)


def test_input_standardizer_without_spread_only_centres() -> None:
    """One reference row (or all columns constant) gives no scale information: centre, scale 1."""
    st = InputStandardizer(3)
    st.fit(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(st.inv_scale, torch.ones(3))
    assert torch.equal(st(torch.tensor([[2.0, 2.0, 5.0]])), torch.tensor([[1.0, 0.0, 2.0]]))


def test_input_standardizer_drops_exactly_the_columns_below_the_floor_hand_computed() -> None:
    """Floor = 1e-3 x the mean column std. By hand: stds (1, 1, 1e-3, 5e-4), mean 0.500375, floor
    5.00375e-4: column 2 (1e-3) is kept and scaled by 1/1e-3; column 3 (5e-4) is below the floor
    and dropped, so its value on a new record does not reach the head (it was scaled by
    1/floor ~ 2000, against 1 for a typical column)."""
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2e-3, 1e-3]])
    st = InputStandardizer(4)
    st.fit(x)
    assert torch.allclose(st.inv_scale[:3], torch.tensor([1.0, 1.0, 1000.0]), rtol=1e-5)
    assert float(st.inv_scale[3]) == 0.0
    new = st(torch.tensor([[1.0, 1.0, 1e-3, 7.0]]))
    assert torch.allclose(new, torch.zeros(1, 4), atol=1e-4)


def test_standardizing_head_ignores_a_column_constant_on_its_reference_set() -> None:
    """Property: a column constant on the reference set carries nothing the head learned, so new
    records that differ only there get the same outputs (before: that column, scaled by 1/floor,
    dominated them)."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(32, 6, generator=g)
    ref[:, 0] = 0.5
    torch.manual_seed(0)
    head = MLPHead(in_dim=6, out_dim=4, hidden_dims=(8,), standardize=True)
    head.net[0].fit(ref)
    new = torch.randn(5, 6, generator=g)
    moved = new.clone()
    moved[:, 0] = 3.0 * torch.randn(5, generator=g)
    assert torch.equal(head(new), head(moved))
