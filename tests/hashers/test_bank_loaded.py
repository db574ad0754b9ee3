"""A loaded head's memory bank holds codes but no labels (review 2)."""

from __future__ import annotations

import pytest
import torch

from hashers import registry
from hashers.base import HashingError, HeadSpec
from hashers.dpsh import DPSHConfig
from hashers.dsh import DSHConfig
from pipeline.synthetic import gaussian_clusters

BANKED = {"dpsh": DPSHConfig(memory_bank=True), "dsh": DSHConfig(memory_bank=True)}


@pytest.mark.parametrize("name", sorted(BANKED))
def test_a_loss_on_a_loaded_banked_head_names_the_missing_labels(name: str, tmp_path) -> None:
    from pipeline.artifacts import load_head, save_head

    s = HeadSpec(in_dim=32, n_bits=8, n_classes=5, hidden_dims=(8,), dropout=0.0)
    train = gaussian_clusters(40, seed=1)
    trained = registry.build(name, s, BANKED[name], seed=0)
    trained.on_fit_start(train)
    trained.train()
    idx = torch.arange(40)
    trained.compute_loss(trained(train.x), train.y, idx)  # fills every bank row
    save_head(tmp_path, trained.state_dict(), {"method": name})
    loaded = registry.build(name, s, BANKED[name], seed=0)
    loaded.load_state_dict(load_head(tmp_path)[0])
    assert torch.equal(loaded.bank.codes, trained.bank.codes) and len(loaded.bank.labels) == 0
    loaded.eval()
    u = loaded(train.x[:4])
    # was "IndexError: index is out of bounds for dimension with size 0" (bank.labels[sel])
    with pytest.raises(
        HashingError,
        match=r"memory bank holds 40 stored codes but 0 training labels \(a loaded head.*"
        r"on_fit_start\(train\)",
    ):
        loaded.compute_loss(u, train.y[:4], idx[:4])
    # as told: on_fit_start sizes the bank again, and the loss equals the fresh in-batch loss
    loaded.on_fit_start(train)
    fresh = registry.build(name, s, seed=0)
    fresh.load_state_dict({k: v for k, v in loaded.state_dict().items() if "bank" not in k})
    fresh.eval()
    got = loaded.compute_loss(u, train.y[:4], idx[:4])["loss"]
    want = fresh.compute_loss(fresh(train.x[:4]), train.y[:4], idx[:4])["loss"]
    assert torch.allclose(got, want)
