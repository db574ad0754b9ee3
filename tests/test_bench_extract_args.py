"""bench/bench_extract.py: a precision it cannot run, and counts of zero, are refused."""

from __future__ import annotations

import pytest


def _run(monkeypatch, capsys, *extra: str) -> tuple[int | str | None, str, list[str]]:
    import bench.bench_extract as be

    measured: list[str] = []

    def fake_measure(backbone, pixels, split, *, batch_size, repeats):
        measured.append(backbone.dtype)
        return 10.0, 9.0, 100.0

    monkeypatch.setattr(be, "measure", fake_measure)
    argv = ["--n", "2", "--batch-size", "2", "--repeats", "1", "--npz", "/nonexistent", *extra]
    try:
        code = be.main(argv)
    except SystemExit as err:
        code = err.code
    out, err = capsys.readouterr()
    return code, out + err, measured


def test_a_precision_other_than_fp32_or_bf16_is_refused_not_timed_as_fp32(
    monkeypatch, capsys
) -> None:
    # Backbone.embed runs bf16 for "bf16" and fp32 for anything else: "fp16" printed a row
    # labelled fp16 that timed the fp32 forward
    code, text, measured = _run(monkeypatch, capsys, "--precisions", "fp32,fp16")
    assert code == 2, text
    assert "'fp16' is not one" in text and "| fp16 |" not in text
    assert measured == []
    code, text, measured = _run(monkeypatch, capsys, "--precisions", "bf16, fp32")
    assert code == 0 and measured == ["bf16", "fp32"], text
    assert "| bf16 | 10.0 | 9.0 | 0.900 | 100 |" in text


@pytest.mark.parametrize("flag", ["--n", "--batch-size", "--repeats"])
def test_zero_images_batch_or_repeats_is_a_usage_error(monkeypatch, capsys, flag) -> None:
    # --n 0: IndexError, --batch-size 0: ValueError from range(), --repeats 0: a
    # ZeroDivisionError for (b)/(a) of rates never measured; all tracebacks
    code, text, _ = _run(monkeypatch, capsys, flag, "0")
    assert code == 2, text
    assert f"argument {flag}: 0 must be >= 1" in text
