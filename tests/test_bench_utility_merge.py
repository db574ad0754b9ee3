"""bench/bench_utility.py --merge: runs of other settings are refused, not merged silently."""

from __future__ import annotations

import argparse
import json

import pytest

METRICS = {"balanced_accuracy": 0.6, "accuracy": 0.7, "macro_f1": 0.6}
FLOAT = {**METRICS, "dim": 4, "one_image": 0.0119}


def _cells(bits, seeds, **metrics):
    return [
        {"features": "pixels", "dataset": "breastmnist", "method": "dpsh", "bits": b, "seed": s,
         **METRICS, **metrics.get(str(b), {}), "distinct_codes": 10}
        for b in bits for s in seeds
    ]  # fmt: skip


def _write(path, cells, *, overrides=(), floats=None, split=None):
    data = {"floats": {"pixels/breastmnist": floats or FLOAT}, "cells": cells}
    data["overrides"] = list(overrides)
    if split is not None:
        data["split"] = split
    path.write_text(json.dumps(data))
    return path


def _args(tmp_path, merge, **kw):
    base = dict(
        merge=merge, seeds=[0, 1, 2], bits=[12, 24, 36, 48], split="test", out=tmp_path / "r.md", json=None,
        overrides=[], jobs=1,
    )  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_merge_refuses_runs_made_with_other_overrides(tmp_path) -> None:
    # a run at --set knn.k=5 merged with one at the default k=7 was one table, its footer "k=7"
    from bench.bench_utility import merge_runs

    a = _write(tmp_path / "a.json", _cells((12,), (0,)), overrides=["knn.k=5"])
    b = _write(tmp_path / "b.json", _cells((12,), (1,)))
    with pytest.raises(SystemExit, match=r"knn\.k=5.*merge only runs of the same settings"):
        merge_runs(_args(tmp_path, [a, b]), ["dpsh"])
    assert not (tmp_path / "r.md").exists()


def test_merge_footer_names_the_k_and_overrides_the_runs_used(tmp_path) -> None:
    # the footer took k and "Overrides:" from the merge command line, not from the merged runs
    from bench.bench_utility import merge_runs

    a = _write(tmp_path / "a.json", _cells((12,), (0,)), overrides=["knn.k=5"])
    b = _write(tmp_path / "b.json", _cells((12,), (1,)), overrides=["knn.k=5"])
    args = _args(tmp_path, [a, b])
    merge_runs(args, ["dpsh"])
    text = args.out.read_text()
    assert "Hamming KNN (k=5," in text and "Overrides: ['knn.k=5']" in text


def test_merge_refuses_a_run_of_another_split(tmp_path) -> None:
    # a val run merged under --split test was labelled "on the **test** split"
    from bench.bench_utility import merge_runs, write_outputs

    src = tmp_path / "val.json"
    cells = _cells((12,), (0,))
    run = _args(tmp_path, None, split="val", json=src, out=tmp_path / "val.md", bits=[12])
    run.features, run.datasets = ["pixels"], ["breastmnist"]
    write_outputs(run, cells, {("pixels", "breastmnist"): FLOAT}, ["dpsh"], 0.0, len(cells))
    with pytest.raises(SystemExit, match=r"val split, not the test split"):
        merge_runs(_args(tmp_path, [src], split="test"), ["dpsh"])
    merge_runs(_args(tmp_path, [src], split="val"), ["dpsh"])
    assert "on the **val** split" in (tmp_path / "r.md").read_text()


def test_merge_refuses_two_float_baselines_of_one_block(tmp_path) -> None:
    # the later file's float KNN silently became the denominator of every cell of the block
    from bench.bench_utility import merge_runs

    a = _write(tmp_path / "a.json", _cells((12,), (0,)))
    other = {**FLOAT, "balanced_accuracy": 0.5}
    b = _write(tmp_path / "b.json", _cells((12,), (1,)), floats=other)
    with pytest.raises(SystemExit, match=r"float KNN of pixels/breastmnist differs"):
        merge_runs(_args(tmp_path, [a, b]), ["dpsh"])


def test_merge_with_bits_counts_only_those_cells_in_the_block_summary(tmp_path) -> None:
    # --merge F --bits 12 48 kept F's 24-bit cells in the block summary ("supervised cells",
    # "cells under 0.98") while the per-method summary left them out
    from bench.bench_utility import merge_runs

    cells = _cells((12, 24, 48), (0, 1), **{"24": {"balanced_accuracy": 0.5}})
    src = _write(tmp_path / "a.json", cells)
    args = _args(tmp_path, [src], bits=[12, 48])
    merge_runs(args, ["dpsh"])
    row = next(r for r in args.out.read_text().splitlines() if r.startswith("| pixels | breast"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    # 2 cells (12 and 48 bits), both at 0.6 = 1.00 x float: none under 0.98
    assert cols[2:5] == ["2", "0.600", "0"], row
    # without --bits: every merged length (the 24-bit cell, 0.5 < 0.98 x 0.6, is counted)
    args = _args(tmp_path, [src], bits=None)
    merge_runs(args, ["dpsh"])
    row = next(r for r in args.out.read_text().splitlines() if r.startswith("| pixels | breast"))
    assert [c.strip() for c in row.strip("|").split("|")][2:5] == ["3", "0.567", "1"], row
