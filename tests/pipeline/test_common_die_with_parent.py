"""HASHAUDIT_DIE_WITH_PARENT takes 1 or 0: another value ('yes', 'true') was read as off, so under
dvc (where the default is on) it turned the protection off while asking for it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.common import die_with_parent
from pipeline.config import ParamsError
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")


@pytest.mark.parametrize("value", ["yes", "true", "on", "2"])
def test_a_value_other_than_0_or_1_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DVC_STAGE", "train@x")
    monkeypatch.setenv("HASHAUDIT_DIE_WITH_PARENT", value)
    with pytest.raises(ParamsError, match=rf"^HASHAUDIT_DIE_WITH_PARENT='{value}': use 1 .* or 0"):
        die_with_parent()


def _pdeathsig(env: dict[str, str]) -> tuple[int, str, str]:
    """Exit code, stdout (the parent-death signal the process has after die_with_parent) and
    stderr of a fresh process with ``env`` added."""
    script = (
        "import ctypes; from pipeline.common import die_with_parent; die_with_parent(); "
        "sig = ctypes.c_int(); libc = ctypes.CDLL(None); libc.prctl(2, ctypes.byref(sig), 0, 0, 0); "
        "print(sig.value)"  # 2 = PR_GET_PDEATHSIG
    )
    drop = ("DVC_STAGE", "HASHAUDIT_DIE_WITH_PARENT")
    base = {k: v for k, v in os.environ.items() if k not in drop}
    res = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    return res.returncode, res.stdout.strip(), res.stderr


def test_set_but_empty_is_the_default() -> None:
    """An empty value is the default (on under dvc, off otherwise), as for HASHAUDIT_LOG; it
    read as off under dvc."""
    assert _pdeathsig({"DVC_STAGE": "train@x", "HASHAUDIT_DIE_WITH_PARENT": ""})[:2] == (0, "15")
    assert _pdeathsig({"HASHAUDIT_DIE_WITH_PARENT": ""})[:2] == (0, "0")
    assert _pdeathsig({"HASHAUDIT_DIE_WITH_PARENT": "1"})[:2] == (0, "15")


def test_a_stage_with_a_bad_value_exits_2_with_one_line() -> None:
    """On the command line (the only place it applies) the stage stops before its body: exit 2,
    one line, no traceback (it parsed its arguments and ran with the protection off)."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "HASHAUDIT_DIE_WITH_PARENT"},
        "DVC_STAGE": "train@x",
        "HASHAUDIT_DIE_WITH_PARENT": "yes",
        "PYTHONPATH": str(REPO),
    }
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.train"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "HASHAUDIT_DIE_WITH_PARENT='yes': use 1" in res.stderr
    assert "Traceback" not in res.stderr and "usage:" not in res.stderr
