"""bench/bench_train.py: the runs train with the settings its report names."""

from __future__ import annotations

import resource


def test_max_steps_reaches_the_child_runs(tmp_path) -> None:
    # The parent applies --max-steps to the params its report prints ("FitConfig: ... max steps")
    # and to the budget check; each (method, bits) run is a child process that rebuilds its
    # params from its own argv. params.yaml says train.max_steps 1200.
    from bench.bench_train import PARAM_FLAGS, child_argv, load_bench_params, parse_args

    for given, expected in (("500", 500), ("0", None)):  # 0 = no step budget
        parent = parse_args(["--max-steps", given, "--epochs", "4"])
        assert load_bench_params(parent).train.max_steps == expected
        child = parse_args(child_argv(parent, "dpsh", 12, tmp_path / "r.json")[2:])
        assert child.single == "dpsh"
        params = load_bench_params(child)
        assert params.train.max_steps == expected
        assert params.train.epochs == 4
    parent = parse_args(["--max-steps", "500"])
    argv = child_argv(parent, "dpsh", 12, tmp_path / "r.json")
    for flag in PARAM_FLAGS:  # every override flag is forwarded when given
        args = parse_args([f"--{flag.replace('_', '-')}", "cpu" if flag == "device" else "3"])
        argv = child_argv(args, "dpsh", 12, tmp_path / "r.json")
        assert f"--{flag.replace('_', '-')}" in argv, flag


def test_report_labels_peak_rss_in_mib(tmp_path, monkeypatch) -> None:
    # hashers.trainer.peak_rss_mb is ru_maxrss / 1024 on Linux: ru_maxrss 1,048,576 KiB is
    # 1024 MiB (1073.7 MB); the report must not call it MB.
    from bench.bench_train import load_bench_params, parse_args, write_report
    from hashers.trainer import peak_rss_mb

    class Usage:
        ru_maxrss = 1_048_576

    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    assert peak_rss_mb() == 1024.0
    args = parse_args(["--n", "100", "--out", str(tmp_path / "r.md")])
    rec = {"method": "dpsh", "bits": 12, "status": "ok", "train_s": 10.0, "epochs_run": 2,
           "best_epoch": 1, "eval_s": 1.0, "peak_rss_mb": 1024.0, "rss_data_mb": 512.0,
           "val_accuracy": 0.5, "test_accuracy": 0.6, "supervised": True}  # fmt: skip
    text = write_report(
        args.out, [rec], {"status": "ok", "test_accuracy": 0.5, "eval_s": 1.0}, args,
        load_bench_params(args), 12.0, None,
    )  # fmt: skip
    assert "| peak RSS MiB | data RSS MiB |" in text
    assert "| peak RSS MiB (max) |" in text
    assert "MB" not in text.replace("MiB", "")
    assert "| 1024 | 512 |" in text
