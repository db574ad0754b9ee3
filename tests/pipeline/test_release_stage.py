"""Stage ``release``: its three outputs land together or not at all."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import release
from pipeline.artifacts import load_codes, save_codes, write_json
from tests.conftest import REPO

ARGS = ["--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false"]


@pytest.fixture
def head(tmp_path: Path) -> Path:
    """A head folder as train writes it (codes + config), 40 train and 10 test 12-bit codes."""
    g = np.random.default_rng(0)
    codes = {
        s: g.integers(0, 256, (n, 2), dtype=np.uint8) for s, n in (("train", 40), ("test", 10))
    }
    codes = {s: c & np.array([255, 0xF0], np.uint8) for s, c in codes.items()}  # 12 bits used
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=12, meta={"method": "dpsh"})
    write_json(tmp_path / "head" / "config.json", {"dataset": "syn", "method": "dpsh"})
    return tmp_path / "head"


def _argv(head: Path, out: Path, metrics: Path) -> list[str]:
    return [*ARGS, "--head", str(head), "--mechanism", "rr", "--epsilon-code", "4",
            "--out", str(out), "--metrics", str(metrics)]  # fmt: skip


def test_release_writes_codes_config_and_metrics(tmp_path: Path, head: Path) -> None:
    out, metrics = tmp_path / "rel", tmp_path / "m" / "rel.json"
    assert release.main(_argv(head, out, metrics)) == 0
    got, n_bits, _ = load_codes(out / "codes.safetensors")
    assert n_bits == 12 and got["train"].shape == (40, 2)
    assert json.loads((out / "config.json").read_text())["release"]["epsilon_code"] == 4.0
    assert json.loads(metrics.read_text())["keep_probability"] == pytest.approx(
        np.exp(4 / 12) / (1 + np.exp(4 / 12))
    )


def test_an_unwritable_metrics_path_leaves_no_release_behind(
    tmp_path: Path, head: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the metrics file goes: refused before any work, and the codes and config
    are not written (they used to be, then the metrics write failed)."""
    out, metrics = tmp_path / "rel", tmp_path / "rel.json"
    metrics.mkdir()
    caplog.set_level(logging.ERROR)
    assert release.main(_argv(head, out, metrics)) == 2
    assert "an output file is expected here but a folder exists" in caplog.text
    assert not out.exists()
