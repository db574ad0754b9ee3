"""train / train_dp: two outputs (or an output and the input embeddings) on one path are refused
before any work; the last write used to replace the other file, with exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import train, train_dp
from pipeline.artifacts import save_embeddings
from pipeline.common import stage_argv
from pipeline.synthetic import synthetic_embeddings
from tests.stage_cli import FAST


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("metrics", "history", "message"),
    [
        # the CSV replaced the metrics JSON (DVC's metrics file was a history table)
        ("same.json", "same.json", "--history {t}/same.json: the same file as --metrics;"),
        # the metrics replaced the head's config.json: the head could never be loaded again
        (
            "head/config.json",
            "h.csv",
            "--metrics {t}/head/config.json: the same file as the head's config.json in --out",
        ),
        # the input embeddings were overwritten by the history CSV
        (
            "m.json",
            "emb.safetensors",
            "--history {t}/emb.safetensors: the same file as --embeddings",
        ),
        # the same file spelled another way (relative to the working directory)
        (
            "m.json",
            "./emb.safetensors",
            "the same file as --embeddings (the input: it would be lost)",
        ),
    ],
)
def test_an_output_on_the_path_of_another_or_of_the_input_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog,
    metrics: str,
    history: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    before = _files(tmp_path)
    hist = Path(history) if history.startswith("./") else tmp_path / history
    argv = stage_argv(
        *FAST, dataset="syn", method="dpsh", bits=12, embeddings=emb, out=tmp_path / "head",
        metrics=tmp_path / metrics, history=hist,
    )  # fmt: skip
    assert train.main(argv) == 2
    assert message.format(t=tmp_path) in caplog.text
    # nothing written, the input untouched
    assert _files(tmp_path) == before
    assert not (tmp_path / "head").exists()


def test_a_dp_head_s_metrics_on_its_history_is_refused_before_opacus_runs(
    tmp_path: Path, caplog
) -> None:
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    argv = stage_argv(
        *FAST, dataset="syn", method="csq", bits=12, epsilon=8, embeddings=emb,
        out=tmp_path / "head_dp", metrics=tmp_path / "dp.json", history=tmp_path / "dp.json",
    )  # fmt: skip
    assert train_dp.main(argv) == 2
    assert f"--history {tmp_path}/dp.json: the same file as --metrics;" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.safetensors"]


def test_distinct_outputs_inside_and_beside_the_head_folder_still_train(tmp_path: Path) -> None:
    """A metrics file inside --out under a name the head does not use is no collision."""
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    argv = stage_argv(
        *FAST, dataset="syn", method="dpsh", bits=12, embeddings=emb, out=tmp_path / "head",
        metrics=tmp_path / "head/train.json", history=tmp_path / "train.csv",
    )  # fmt: skip
    assert train.main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "head").iterdir())
    assert names == ["codes.safetensors", "config.json", "head.safetensors", "train.json"]
    assert (tmp_path / "train.csv").read_text().startswith("epoch,")


def test_an_output_that_is_a_link_to_the_input_replaces_the_link_not_the_input(
    tmp_path: Path,
) -> None:
    """DVC's cache can leave outputs as symbolic links (two may share one target): a write
    replaces the link, so a link is compared as itself, not as what it points to."""
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    before = emb.read_bytes()
    (tmp_path / "train.csv").symlink_to(emb)
    argv = stage_argv(
        *FAST, dataset="syn", method="dpsh", bits=12, embeddings=emb, out=tmp_path / "head",
        metrics=tmp_path / "train.json", history=tmp_path / "train.csv",
    )  # fmt: skip
    assert train.main(argv) == 0
    assert emb.read_bytes() == before
    hist = tmp_path / "train.csv"
    assert not hist.is_symlink() and hist.read_text().startswith("epoch,")
