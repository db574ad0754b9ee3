"""Stage ``release``: its three outputs land together or not at all."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import release
from pipeline.artifacts import load_codes, save_codes, write_json
from retrieval.codes import pack_bits, unpack_bits
from tests.conftest import REPO

ARGS = ["--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false"]


@pytest.fixture
def head(tmp_path: Path) -> Path:
    """A head folder as train writes it (codes + config), 40 train and 10 test 12-bit codes."""
    g = np.random.default_rng(0)
    codes = {
        s: g.integers(0, 256, (n, 2), dtype=np.uint8) for s, n in (("train", 40), ("test", 10))
    }
    # 12 bits, packed little-endian (retrieval.codes.pack_bits): bits 8-11 are the low nibble of
    # byte 2, the high nibble is padding (0xF0 kept the padding and zeroed bits 8-11)
    codes = {s: c & np.array([255, 0x0F], np.uint8) for s, c in codes.items()}
    assert all(np.array_equal(pack_bits(unpack_bits(c, 12)), c) for c in codes.values())
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


def _released_train(out: Path) -> np.ndarray:
    return load_codes(out / "codes.safetensors")[0]["train"]


def test_default_release_randomness_is_secret_and_recorded_nowhere(
    tmp_path: Path, head: Path
) -> None:
    """release.seed: null (the default) draws the flips from OS entropy: two runs differ, and
    neither config.json nor the metrics hold a seed from which the flips could be replayed (the
    old default, seed 0 written to config.json, let anyone undo every flip)."""
    outs = [tmp_path / f"rel{i}" for i in range(2)]
    for i, out in enumerate(outs):
        assert release.main(_argv(head, out, tmp_path / "m" / f"rel{i}.json")) == 0
    assert not np.array_equal(_released_train(outs[0]), _released_train(outs[1]))
    for i, out in enumerate(outs):
        info = json.loads((out / "config.json").read_text())["release"]
        assert info["randomness"] == "secret" and "seed" not in info
        text = (out / "config.json").read_text() + (tmp_path / "m" / f"rel{i}.json").read_text()
        assert "seed" not in text


def test_a_seeded_release_is_reproducible_recorded_and_its_masks_are_independent(
    tmp_path: Path, head: Path
) -> None:
    """release.seed: an int reproduces the release and is recorded ("seeded"); the train and test
    splits, two heads of the same bits and two ε_code get independent flip masks (the old
    seed + split index gave every head of one bit width the same mask: XOR of two releases was
    the XOR of their true codes)."""
    seeded = ["--set", "release.seed=5", "--set", "release.apply_to=both"]

    def run(head_dir: Path, name: str, eps: str = "4") -> tuple[dict, dict]:
        out = tmp_path / name
        argv = [*seeded, "--head", str(head_dir), "--mechanism", "rr", "--epsilon-code", eps,
                "--out", str(out), "--metrics", str(tmp_path / "m" / f"{name}.json")]  # fmt: skip
        assert release.main([*ARGS, *argv]) == 0
        before = load_codes(head_dir / "codes.safetensors")[0]
        after = load_codes(out / "codes.safetensors")[0]
        masks = {s: unpack_bits(before[s] ^ after[s], 12) for s in ("train", "test")}
        return masks, json.loads((out / "config.json").read_text())["release"]

    masks, info = run(head, "a")
    again, _ = run(head, "a_again")
    assert all(np.array_equal(masks[s], again[s]) for s in masks)  # reproducible
    assert info["randomness"] == "seeded" and info["seed"] == 5
    # the same codes in both splits: equal masks would show as equal releases
    same = tmp_path / "same"
    codes = load_codes(head / "codes.safetensors")[0]
    save_codes(same / "codes.safetensors", {"train": codes["train"], "test": codes["train"]},
               n_bits=12, meta={"method": "dpsh"})  # fmt: skip
    write_json(same / "config.json", {"dataset": "syn", "method": "dpsh"})
    split_masks, _ = run(same, "splits")
    assert not np.array_equal(split_masks["train"], split_masks["test"])
    # bits 8-11 too (the big-endian unpack read the padding there: equal for equal codes)
    assert not np.array_equal(split_masks["train"][:, 8:], split_masks["test"][:, 8:])
    # another head (other method) of the same bit width, and another ε_code
    other = tmp_path / "other"
    save_codes(other / "codes.safetensors", codes, n_bits=12, meta={"method": "csq"})
    write_json(other / "config.json", {"dataset": "syn", "method": "csq"})
    other_masks, _ = run(other, "b")
    assert not np.array_equal(masks["train"], other_masks["train"])
    eps_masks, _ = run(head, "c", eps="3.9")
    assert (masks["train"] != eps_masks["train"]).mean() > 0.2  # not one mask thresholded twice


def test_seeded_release_masks_differ_for_heads_that_differ_in_any_setting() -> None:
    """Two heads of one dataset, method, length and seed that differ only in a training setting
    (here lr) get other flip masks under the same release.seed."""
    from pipeline.release import release_context
    from privacy.release import release_stream

    head = {"dataset": "d", "method": "dpsh", "seed": 0, "fit": {"lr": 0.001}}
    other = {**head, "fit": {"lr": 0.002}}
    a = np.random.default_rng(release_stream(0, release_context(head))).random(64)
    b = np.random.default_rng(release_stream(0, release_context(other))).random(64)
    again = np.random.default_rng(release_stream(0, release_context(dict(head)))).random(64)
    assert not np.array_equal(a, b) and np.array_equal(a, again)
