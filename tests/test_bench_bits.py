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


def test_compare_tabulates_seed_means_hand_computed(tmp_path, capsys) -> None:
    import json

    from bench.bench_bits import replay_compare

    def cell(method: str, bits: int, seed: int, sel: float) -> dict:
        return {"features": "f", "dataset": "d", "method": method, "bits": bits, "seed": seed,
                "selected": sel, "last": sel - 0.1, "oracle": sel + 0.2}  # fmt: skip

    off = [cell("a", 12, 0, 0.5), cell("a", 12, 1, 0.7), cell("a", 48, 0, 0.4),
           cell("a", 48, 1, 0.4)]  # fmt: skip
    on = [cell("a", 12, 0, 0.6), cell("a", 12, 1, 0.6), cell("a", 48, 0, 0.5),
          cell("a", 48, 1, 0.7)]  # fmt: skip
    for name, cells in (("off", off), ("on", on)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"cells": cells, "overrides": []}))
    replay_compare(tmp_path / "off.json", tmp_path / "on.json")
    out = capsys.readouterr().out.splitlines()
    # seed means: off 12 bits 0.6, 48 bits 0.4 (mean 0.5); on 0.6 and 0.6 (mean 0.6); one of two
    # cells better on; last = selected - 0.1; oracle = selected + 0.2
    assert "| f | d | 0.500 | 0.600 | 1/2 | 0.400 | 0.500 | 0.700 | 0.800 |" in out
    # 48 - 12: off -0.2 (48 < 12 for the one method), on 0.0; selection gap 0.2 both
    assert "| f | d | -0.200 | +0.000 | 1/1 | 0/1 | 0.200 | 0.200 |" in out
