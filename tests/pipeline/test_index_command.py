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
