"""bench/bench_retrieval.py, bench_retrieval_cpu.py: what their timings include."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pytest

FIRST_CALL_S = 0.6  # one-off cost of a first call: numba import + kernel load / compile


class _FirstCallSlow:
    """Wraps a function; its first call in the process costs FIRST_CALL_S more."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        if self.calls == 1:
            time.sleep(FIRST_CALL_S)
        return self.fn(*a, **kw)


class _Report:
    def __init__(self, q_labels):
        self.scalars = {"map_all": 0.25, "map_at_1000": 0.5, "precision_at_10": 0.75}
        self.predictions = {7: np.asarray(q_labels)}


def _fake_report(q, db, bits, y_q, y_db, ks, spec=None):
    return _Report(y_q)


def test_pathmnist_seconds_exclude_the_first_call_warm_up(monkeypatch) -> None:
    # The first hamming_report of a process imports numba and loads the count kernels (0.4 s
    # with numba's cache): the first row ("uniform") must not carry it.
    import bench.bench_retrieval as bench

    monkeypatch.setattr(bench, "hamming_report", _FirstCallSlow(_fake_report))
    lines: list[str] = []
    bench.part_pathmnist(argparse.Namespace(), np.random.default_rng(0), lines)
    rows = [ln for ln in lines if ln.startswith("| uniform") or ln.startswith("| clustered")]
    assert len(rows) == 3
    for row in rows:
        assert float(row.split("|")[2]) < FIRST_CALL_S / 2, row
    assert "| uniform |" in rows[0] and "| 0.2500 | 0.5000 | 0.7500 | 1.0000 |" in rows[0]


def test_cpu_pathmnist_seconds_exclude_the_first_call_warm_up(monkeypatch, capsys) -> None:
    import bench.bench_retrieval_cpu as bench

    monkeypatch.setattr(bench, "hamming_report", _FirstCallSlow(_fake_report))
    bench.pathmnist(np.random.default_rng(0))
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| uniform")]
    assert len(rows) == 1
    wall = float(rows[0].split("|")[2])
    assert wall < FIRST_CALL_S / 2, rows[0]
    assert rows[0].endswith("| 0.2500 |")


def test_two_stage_hamming_seconds_exclude_the_first_search(monkeypatch) -> None:
    # The two-stage part timed the first HammingIndex.search of the process (hamming_report
    # uses the count kernels, not the top-k ones): its kernel load / compile landed in the
    # "Hamming only" seconds (3.3 s without numba's cache for a 1 ms search).
    import bench.bench_retrieval as bench
    from retrieval.search import HammingIndex

    class SlowFirst(HammingIndex):
        calls = 0

        def search(self, q, k):
            SlowFirst.calls += 1
            if SlowFirst.calls == 1:
                time.sleep(FIRST_CALL_S)
            return super().search(q, k)

    monkeypatch.setattr(bench, "HammingIndex", SlowFirst)
    lines: list[str] = []
    args = argparse.Namespace(ts_n=1200, ts_queries=20, shortlist=[50])
    bench.part_two_stage(args, np.random.default_rng(0), lines)
    row = next(ln for ln in lines if ln.startswith("| Hamming only"))
    seconds, ms_per_query = float(row.split("|")[4]), float(row.split("|")[5])
    assert seconds < FIRST_CALL_S / 2, row
    assert ms_per_query == pytest.approx(1000 * seconds / 20, abs=0.03)  # seconds to 3 decimals


def test_threads_flag_sets_our_scan_threads_like_faiss(monkeypatch, capsys) -> None:
    # --threads set faiss' OpenMP threads only; our compiled scan kept every CPU, so "ratio to
    # ours" compared 1 faiss thread against all of ours.
    import faiss

    import bench.bench_retrieval as bench
    from retrieval import scan

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs to tell 1 thread from all")
    monkeypatch.setenv("HASHAUDIT_THREADS", "unset-by-the-test")
    monkeypatch.delenv("HASHAUDIT_THREADS")  # restored (absent) after the test
    argv = ["--threads", "1", "--parts", "two_stage", "--ts-n", "1200", "--ts-queries", "20"]
    argv += ["--shortlist", "50"]
    monkeypatch.setattr(sys, "argv", ["bench_retrieval.py", *argv])
    before = faiss.omp_get_max_threads()
    try:
        bench.main()
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)
    assert scan.threads() == 1
    assert "faiss threads: 1, compiled scan threads: 1." in capsys.readouterr().out
