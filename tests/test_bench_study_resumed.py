"""bench/bench_study.py: RUN.md says when its wall time is not the whole study's."""

from __future__ import annotations

import json


def _fake_run(datasets):
    """Stands in for subprocess.run: ``dvc repro`` writes the outputs the bench copies."""

    def run(cmd, *, cwd, check, env):
        if cmd[1:] == ["-m", "dvc", "repro"]:
            for ds in datasets:
                (cwd / "reports" / ds).mkdir(parents=True, exist_ok=True)
                (cwd / "reports" / ds / "report.md").write_text("# report\n")
                (cwd / "metrics" / "report").mkdir(parents=True, exist_ok=True)
                (cwd / "metrics" / "report" / f"{ds}.json").write_text(json.dumps({"x": 1}))

    return run


def test_run_md_says_a_resumed_study_did_not_rerun_every_stage(monkeypatch, tmp_path) -> None:
    # with --work of an earlier run, dvc repro reruns only changed stages: RUN.md gave that
    # partial time as "`dvc repro` wall time" of the study
    import bench.bench_study as bs

    monkeypatch.setattr(bs.subprocess, "run", _fake_run(["breastmnist"]))
    argv = ["--root", str(tmp_path), "--features", "tiny-random", "--datasets", "breastmnist"]
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    assert bs.main([*argv, "--out", str(tmp_path / "o1"), "--work", str(fresh)]) == 0
    run_md = (tmp_path / "o1" / "RUN.md").read_text()
    assert "`dvc repro` wall time:" in run_md and "Resumed" not in run_md
    old.mkdir()
    (old / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # an earlier run's lock
    assert bs.main([*argv, "--out", str(tmp_path / "o2"), "--work", str(old)]) == 0
    run_md = (tmp_path / "o2" / "RUN.md").read_text()
    assert "Resumed: the scratch study already held an earlier run's dvc.lock" in run_md
    assert (tmp_path / "o2" / "breastmnist" / "headline.json").read_text() == '{"x": 1}'
