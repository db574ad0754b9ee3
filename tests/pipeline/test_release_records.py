"""Stage ``release``: what a release's ``config.json`` records is the mechanism that ran, once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import release
from pipeline.artifacts import load_codes, save_codes, write_json
from retrieval.codes import unpack_bits
from tests.conftest import REPO

ARGS = ["--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false"]


@pytest.fixture
def head(tmp_path: Path) -> Path:
    """A head folder as train writes it (codes + config): 40 train and 10 test 12-bit codes over
    4 distinct values, so a k = 5 release changes few codes."""
    g = np.random.default_rng(0)
    codes = {s: g.integers(0, 4, (n, 2), dtype=np.uint8) for s, n in (("train", 40), ("test", 10))}
    save_codes(tmp_path / "head" / "codes.safetensors", codes, n_bits=12, meta={"method": "dpsh"})
    write_json(tmp_path / "head" / "config.json", {"dataset": "syn", "method": "dpsh"})
    return tmp_path / "head"


def _release(head: Path, out: Path, metrics: Path, *extra: str) -> int:
    return release.main([*ARGS, "--set", "release.k=5", *extra, "--head", str(head),
                         "--out", str(out), "--metrics", str(metrics)])  # fmt: skip


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_k_anonymous_release_records_no_epsilon_code(
    tmp_path: Path, head: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``--mechanism kanon --epsilon-code 4`` wrote ``"epsilon_code": 4.0`` into the k-anonymous
    release's config.json: a budget of ε-LDP for a mechanism that is not DP at all. Refused now,
    before anything is written; without the flag the release records none."""
    caplog.set_level(logging.ERROR)
    out, metrics = tmp_path / "k", tmp_path / "m" / "k.json"
    assert _release(head, out, metrics, "--mechanism", "kanon", "--epsilon-code", "4") == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "--epsilon-code 4" in errors[0] and "not DP" in errors[0], errors
    assert not out.exists() and not metrics.exists()
    assert _release(head, out, metrics, "--mechanism", "kanon") == 0
    info = json.loads((out / "config.json").read_text())["release"]
    assert info["mechanism"] == "kanon" and info["epsilon_code"] is None and info["k"] == 5
    assert "epsilon_code" not in json.loads(metrics.read_text())


def test_a_release_of_a_release_is_refused_naming_its_head(
    tmp_path: Path, head: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A release given as ``--head``: its release block was replaced by the second one, so an
    ε_code = 1 randomised response of the train codes followed by a k-anonymous release of the
    test codes recorded only ``kanon`` on ``test``, the noised train codes passing for the head's
    own (``splits: ["test"]``)."""
    rr, rr_metrics = tmp_path / "rr", tmp_path / "m" / "rr.json"
    assert _release(head, rr, rr_metrics, "--mechanism", "rr", "--epsilon-code", "1") == 0
    # the rr release did change train codes: a second release would hide that
    head_train = unpack_bits(load_codes(head / "codes.safetensors")[0]["train"], 12)
    rr_train = unpack_bits(load_codes(rr / "codes.safetensors")[0]["train"], 12)
    assert (head_train != rr_train).any()
    caplog.set_level(logging.ERROR)
    out, metrics = tmp_path / "rk", tmp_path / "m" / "rk.json"
    extra = ("--set", "release.apply_to=query", "--mechanism", "kanon")
    assert _release(rr, out, metrics, *extra) == 2
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert f"--head {rr}: a release" in errors[0] and "mechanism rr" in errors[0]
    assert f"({head})" in errors[0]  # the head folder to pass instead
    assert not out.exists() and not metrics.exists()
    assert _release(head, out, metrics, *extra) == 0  # from the head itself: released
    assert json.loads((out / "config.json").read_text())["release"]["splits"] == ["test"]
