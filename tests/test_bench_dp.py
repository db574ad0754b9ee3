"""bench/bench_dp.py: the membership TPR at a fixed FPR follows the library's rule."""

from __future__ import annotations

import numpy as np
import pytest


def test_tpr_at_fpr_admits_floor_n_fpr_non_members() -> None:
    # 100 non-members scored 0..99, one member at 98.5. At 1 % FPR one false positive is allowed
    # (1/100 <= 0.01): the threshold just above 98 admits the non-member 99 and the member -> TPR 1.
    # The old quantile threshold (np.quantile(..., 0.99, "higher") = 99) admitted none -> TPR 0.
    from bench.bench_dp import tpr_at

    out = np.arange(100.0)
    assert tpr_at(np.array([98.5]), out, 0.01) == 1.0
    # 400 non-members 0..399, members at 395.5 and 394.5: 4 false positives allowed (396..399)
    # -> only 395.5 passes: TPR 1/2 (old: threshold 396, 3 false positives, TPR 0)
    out4 = np.arange(400.0)
    assert tpr_at(np.array([395.5, 394.5]), out4, 0.01) == 0.5
    # 10 % of 400 = 40 false positives: threshold above 359 -> 359.5 passes, 358.5 does not
    assert tpr_at(np.array([359.5, 358.5]), out4, 0.10) == 0.5


def test_tpr_at_matches_roc_numbers_and_cell_shows_blind_baseline() -> None:
    from bench.bench_dp import mi_cell, tpr_at
    from privacy.membership import roc_numbers

    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(0.3, 1, 300), rng.normal(0, 1, 400)
    ref = roc_numbers(np.r_[np.ones(300, bool), np.zeros(400, bool)], np.r_[s_in, s_out])
    assert tpr_at(s_in, s_out, 0.01) == pytest.approx(ref["tpr_at_fpr_1pct"])
    # blind baseline at 1 % over 400 non-members: j = 4 -> 5/401 = 0.012
    assert mi_cell(np.array([395.5]), np.arange(400.0), 0.01) == "1.000 (blind 0.012; "


def test_unknown_section_is_refused_before_anything_is_written(monkeypatch, tmp_path) -> None:
    # "--sections dpp" used to run no section and still write --out (empty tables)
    import sys

    from bench import bench_dp

    out = tmp_path / "r.md"
    monkeypatch.setattr(sys, "argv", ["bench_dp.py", "--sections", "dpp", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        bench_dp.main()
    assert exc.value.code == 2 and not out.exists()


def test_float_knn_log_uses_the_tables_k(monkeypatch, tmp_path, caplog) -> None:
    # knn.k = 5 with a sweep without 7: the float log looked up k = 7 (StopIteration)
    import sys

    from bench import bench_dp

    root = bench_dp.REPO.parent / "shared" / "data" / "medmnist"
    if not (root / "breastmnist.npz").exists():
        pytest.skip("needs the shared BreastMNIST file")
    out = tmp_path / "r.md"
    argv = ["bench_dp.py", "--datasets", "breastmnist", "--sections", "kanon", "--bits", "8",
            "--kanon-methods", "lsh", "--out", str(out), "--set", "knn.k=5",
            "--set", "knn.k_sweep=[5]"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    bench_dp.main()
    assert "| breastmnist | lsh | 8 | 5 |" in out.read_text()
    assert "float KNN acc (k = 5)" in caplog.text


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("bench_dp", ["--sections", "dp"]),
        ("bench_train", ["--n", "100"]),
        ("bench_utility", ["--split", "val"]),
    ],
)
def test_a_bench_without_out_is_refused_and_never_overwrites_the_curated_results(
    monkeypatch, capsys, script: str, argv: list[str]
) -> None:
    # --out defaulted to bench/RESULTS-<name>.md: a quick check overwrote the published tables
    import importlib
    import sys

    module = importlib.import_module(f"bench.{script}")
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
