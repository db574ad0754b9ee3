"""``hashaudit index``: a bad --k names the flag, not the params."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.artifacts import save_codes
from tests.conftest import REPO


@pytest.mark.parametrize("k", [0, 41])
def test_bad_k_names_the_flag_and_the_database_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, k: int
) -> None:
    g = np.random.default_rng(0)
    codes = {s: g.integers(0, 256, (n, 1), dtype=np.uint8) for s, n in (("train", 40), ("test", 5))}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=8, meta={})
    caplog.set_level(logging.ERROR)
    argv = ["index", "--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false"]
    argv += ["--head", str(tmp_path / "head"), "--k", str(k), "--out", str(tmp_path / "i.json")]
    assert cli.main(argv) == 2
    assert f"--k {k}: must be between 1 and the 40 database codes" in caplog.text
    assert "knn.k" not in caplog.text and not (tmp_path / "i.json").exists()


def _index(tmp_path: Path, caplog: pytest.LogCaptureFixture, *extra: str) -> int:
    caplog.set_level(logging.ERROR)
    argv = ["index", "--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false"]
    argv += ["--head", str(tmp_path / "head"), "--k", "3", "--out", str(tmp_path / "i.json")]
    return cli.main([*argv, *extra])


def test_codes_without_a_test_split_name_the_split_not_a_key_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codes = {"train": np.zeros((10, 2), dtype=np.uint8), "val": np.zeros((4, 2), np.uint8)}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=12, meta={})
    assert _index(tmp_path, caplog) == 2
    assert "no 'test' codes (the file holds 'train', 'val')" in caplog.text
    assert "uint8 [N, 2] arrays named 'train', 'test'" in caplog.text
    assert "KeyError" not in caplog.text and not (tmp_path / "i.json").exists()


def test_codes_of_another_width_than_their_bit_count_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codes = {s: np.zeros((10, 2), dtype=np.uint8) for s in ("train", "test")}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=12, meta={})
    path = tmp_path / "head" / "codes.safetensors"
    from safetensors.numpy import load_file, save_file

    arrays = load_file(path)
    arrays["test"] = np.zeros((4, 3), dtype=np.uint8)  # 24 bits' width beside 12-bit codes
    save_file(arrays, path, metadata={"format": "hashaudit.codes/1", "n_bits": "12"})
    assert _index(tmp_path, caplog) == 2
    assert "'test' codes are uint8 (4, 3), but 12-bit codes are packed uint8 [N, 2]" in caplog.text
    assert not (tmp_path / "i.json").exists()


def test_a_uri_for_a_back_end_that_reads_none_is_refused_not_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codes = {s: np.zeros((10, 1), dtype=np.uint8) for s in ("train", "test")}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=8, meta={})
    assert _index(tmp_path, caplog, "--backend", "exact", "--uri", "http://db:19530") == 2
    assert "--uri 'http://db:19530': only the milvus back-end reads a URI" in caplog.text
    assert "this run uses 'exact'" in caplog.text and not (tmp_path / "i.json").exists()
    assert _index(tmp_path, caplog, "--backend", "exact") == 0  # the same run without --uri


def test_codes_with_an_empty_test_split_name_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codes = {"train": np.zeros((10, 1), dtype=np.uint8), "test": np.zeros((0, 1), np.uint8)}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=8, meta={})
    assert _index(tmp_path, caplog) == 2
    assert f"{tmp_path / 'head' / 'codes.safetensors'}: holds no test codes" in caplog.text
    assert not (tmp_path / "i.json").exists()


def test_the_index_is_closed_when_its_search_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import index as stage
    from pipeline.config import load_params

    closed: list[bool] = []

    class Failing:
        def search(self, q, k):
            raise RuntimeError("connection lost")

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(stage, "build_index", lambda *a, **kw: Failing())
    codes = {s: np.zeros((10, 1), dtype=np.uint8) for s in ("train", "test")}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=8, meta={})
    params = load_params(REPO / "params.yaml", {"tracking.enabled": False})
    with pytest.raises(RuntimeError, match="connection lost"):
        stage.run_index(params, head_dir=tmp_path / "head", k=3, out=tmp_path / "i.json")
    assert closed == [True] and not (tmp_path / "i.json").exists()
