"""bench/bench_retrieval.py: an unknown code kind or part, or no repeat, is a usage error."""

from __future__ import annotations

import sys


def _main(monkeypatch, capsys, *argv: str) -> tuple[int | str | None, str]:
    import bench.bench_retrieval as bench

    monkeypatch.setattr(sys, "argv", ["bench_retrieval.py", *argv])
    try:
        bench.main()
        code = 0
    except SystemExit as err:
        code = err.code
    out, err = capsys.readouterr()
    return code, out + err


def test_a_misspelt_code_kind_is_refused_not_run_as_clustered(monkeypatch, capsys) -> None:
    # million_codes draws uniform codes for "uniform" and clustered ones for any other word:
    # --kinds Uniform timed clustered codes in rows labelled "Uniform"
    small = ["--parts", "exact", "--n", "2000", "--queries", "16", "--repeat", "1", "--skip-numpy"]
    code, text = _main(monkeypatch, capsys, *small, "--kinds", "Uniform")
    assert code == 2, text
    assert "argument --kinds: invalid choice: 'Uniform'" in text
    assert "| Uniform |" not in text
    code, text = _main(monkeypatch, capsys, *small, "--kinds", "uniform")
    assert code == 0 and "| uniform | ours (HammingIndex: compiled scan) |" in text, text


def test_a_misspelt_part_is_refused_not_a_run_that_measures_nothing(monkeypatch, capsys) -> None:
    # --parts exat ran no part and exited 0 (with --out, the file held the header alone)
    code, text = _main(monkeypatch, capsys, "--parts", "exat")
    assert code == 2, text
    assert "argument --parts: invalid choice: 'exat'" in text


def test_zero_repeats_is_a_usage_error(monkeypatch, capsys) -> None:
    # timed(fn, 0) returned (inf, None): a TypeError traceback unpacking None
    code, text = _main(monkeypatch, capsys, "--parts", "exact", "--repeat", "0")
    assert code == 2, text
    assert "argument --repeat: 0 must be >= 1" in text
