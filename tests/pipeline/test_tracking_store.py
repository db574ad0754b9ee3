"""A tracking.uri naming a store MLflow cannot open or keep runs in: one line naming the setting,
before any stage output, instead of a traceback (or, in memory, runs silently lost)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from pipeline import knn, tracking
from pipeline.artifacts import save_embeddings
from pipeline.config import ParamsError, TrackingConfig
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO
from tests.pipeline.test_tracking_inputs import ENV_FIX, FIX

MEMORY = "an in-memory database: every run is lost when the stage exits"
FILE_STORE = (
    "MlflowException: The filesystem tracking backend (e.g., './mlruns') is in maintenance mode"
)


def _refused(uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    t0 = time.monotonic()
    with pytest.raises(ParamsError) as err, tracking.stage_run(TrackingConfig(uri=uri), name="x"):
        pass
    assert time.monotonic() - t0 < 30  # a folder as the database: MLflow retried for ~100 s
    return str(err.value)


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow took the run, exit 0, and the runs were gone when the stage exited."""
    monkeypatch.chdir(tmp_path)
    assert _refused(uri, monkeypatch) == (
        f"tracking.uri: {uri!r} cannot hold an MLflow store ({MEMORY}); {FIX}"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_database_path_that_is_a_folder_or_under_a_file_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder: MLflow retried "unable to open database file" for about 100 s, then a
    traceback; a path under a file: a FileExistsError traceback."""
    folder = tmp_path / "store"
    folder.mkdir()
    uri = f"sqlite:///{folder}"
    assert _refused(uri, monkeypatch) == (
        f"tracking.uri: {uri!r} cannot hold an MLflow store ({folder} is a folder, not a "
        f"database file); {FIX}"
    )
    (tmp_path / "afile").write_text("x")
    uri = f"sqlite:///{tmp_path / 'afile' / 'sub' / 'm.db'}"
    assert _refused(uri, monkeypatch) == (
        f"tracking.uri: {uri!r} cannot hold an MLflow store ({tmp_path / 'afile'} is a file, "
        f"not a folder); {FIX}"
    )


def test_a_host_where_the_path_belongs_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite://m.db`` (two slashes): sqlalchemy's ArgumentError traceback."""
    monkeypatch.chdir(tmp_path)
    assert _refused("sqlite://m.db", monkeypatch) == (
        "tracking.uri: 'sqlite://m.db' cannot hold an MLflow store ('m.db' stands where a host "
        "goes; a database file takes three slashes (sqlite:///m.db), four for an absolute path "
        f"(sqlite:////data/mlflow.db)); {FIX}"
    )
    assert _refused("sqlite:m.db", monkeypatch) == (
        "tracking.uri: MLflow cannot open the store 'sqlite:m.db' (ArgumentError: Could not "
        f"parse SQLAlchemy URL from given URL string); {FIX}"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlalchemy's DatabaseError traceback, exit 1."""
    notes = tmp_path / "notes.db"
    notes.write_text("not sqlite\n")
    uri = f"sqlite:///{notes}"
    assert _refused(uri, monkeypatch) == (
        f"tracking.uri: MLflow cannot open the store {uri!r} (DatabaseError: file is not a "
        f"database); {FIX}"
    )
    assert notes.read_text() == "not sqlite\n"


def test_a_file_store_named_by_the_variable_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``./mlruns`` (MLflow's old default): MLflow 3 refuses the file store with a traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ParamsError) as err:
        tracking.close_stale_runs(TrackingConfig())
    message = str(err.value)
    assert message.startswith(
        f"MLFLOW_TRACKING_URI: MLflow cannot open the store './mlruns' ({FILE_STORE}"
    )
    assert message.endswith(
        f"MLFLOW_ALLOW_FILE_STORE=true` to opt out of this exception.); {ENV_FIX}"
    )
    assert "\n" not in message


def test_a_stage_with_a_file_store_exits_2_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    uri = (tmp_path / "mlruns").as_uri()
    argv = ["--params", str(REPO / "params.yaml"), "--set", f"tracking.uri={uri}"]
    argv += ["--dataset", "syn", "--embeddings", str(emb), "--metrics", str(tmp_path / "m.json")]
    argv += ["--sweep", str(tmp_path / "s.csv"), "--confusion", str(tmp_path / "c/c.png")]
    assert knn.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"tracking.uri: MLflow cannot open the store {uri!r} ({FILE_STORE}")
    assert errors[0].endswith(FIX)
    assert "Traceback" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors"]


def test_a_fresh_store_in_a_new_folder_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'new' / 'sub' / 'm.db'}"
    with tracking.stage_run(TrackingConfig(uri=uri), name="knn@x") as run:
        assert run.active
    assert (tmp_path / "new" / "sub" / "m.db").is_file()


@pytest.mark.parametrize("value", ["false", "no", "off", "2"])
def test_a_tracking_switch_other_than_0_or_1_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "false", "no" or "off" read as on: the stage logged to the store it was asked to leave
    monkeypatch.setenv("HASHAUDIT_TRACKING", value)
    with pytest.raises(ParamsError, match=rf"^HASHAUDIT_TRACKING='{value}': use 0 \(no MLflow"):
        tracking.tracking_enabled(TrackingConfig())
    for env, want in (("0", False), ("1", True), ("", True)):
        monkeypatch.setenv("HASHAUDIT_TRACKING", env)
        assert tracking.tracking_enabled(TrackingConfig()) is want
    assert tracking.tracking_enabled(TrackingConfig(enabled=False)) is False


def test_a_store_named_with_a_query_string_is_the_same_file_and_lock(tmp_path: Path) -> None:
    # "sqlite:///m.db?timeout=30" keyed the creation lock on "m.db?timeout=30": two stages naming
    # one store with and without the query raced to create it again
    plain, query = f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/m.db?timeout=30"
    assert tracking.sqlite_path(query) == tracking.sqlite_path(plain) == tmp_path / "m.db"
    assert tracking.artifact_location(query) == (tmp_path / "mlartifacts").as_uri()
    assert tracking.sqlite_path("http://127.0.0.1:5000") is None
