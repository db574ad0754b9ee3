"""bench/bench_bits.py: what its held-out curves can and cannot measure."""

from __future__ import annotations

import pytest


def test_max_epochs_refuses_to_cut_hashnet_whose_schedule_follows_the_budget() -> None:
    # HashNet's beta at epoch e depends on the budget E the trainer passes (b40bda9): at epoch 59
    # it is 3.98 in a 200-epoch run but 7.14 in a 60-epoch one, so the first 60 epochs of a
    # 200-epoch curve are not a 60-epoch run. Other methods' curves may still be cut.
    from bench.bench_bits import truncated

    cell = {"method": "hashnet", "curve": [0.5] * 5, "curve_acc": [0.6] * 5, "sel_curve": [1] * 5}
    with pytest.raises(SystemExit, match="hashnet"):
        truncated(cell, 3)
    assert truncated(cell, 5)["curve"] == [0.5] * 5  # nothing cut: nothing to refuse
    assert truncated({**cell, "method": "dpsh"}, 3)["curve"] == [0.5] * 3
