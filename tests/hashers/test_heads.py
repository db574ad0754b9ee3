"""Head building blocks: the input standardiser (fixed statistics, by-hand values)."""

from __future__ import annotations

import torch

from hashers.heads import InputStandardizer, MLPHead


def test_input_standardizer_uses_fixed_statistics_and_floors_constant_columns() -> None:
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    st = InputStandardizer(3)
    assert torch.equal(st(x), x)  # identity before fit
    st.fit(x)
    z = st(x)
    # by hand: column 0 mean 3, std sqrt(8/3); column 1 constant -> 0 after centring
    assert torch.allclose(z[:, 0], torch.tensor([-2.0, 0.0, 2.0]) / (8 / 3) ** 0.5)
    assert torch.equal(z[:, 1], torch.zeros(3))
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-6)
    # a new record off the constant column is scaled by the floor (1e-3 x mean std), not 1/0
    mean_std = float(torch.tensor([(8 / 3) ** 0.5, 0.0, x[:, 2].std(unbiased=False)]).mean())
    out = st(torch.tensor([[3.0, 5.5, 5.0]]))
    assert (
        torch.isfinite(out).all() and abs(float(out[0, 1]) / (0.5 / (1e-3 * mean_std)) - 1) < 1e-4
    )
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
