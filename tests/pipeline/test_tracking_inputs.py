"""What a stage hands MLflow: the store URI (tracking.uri or $MLFLOW_TRACKING_URI), the experiment
name, metric names and metric values, and the store lock files."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from pipeline import knn, tracking
from pipeline.artifacts import save_embeddings
from pipeline.config import ParamsError, TrackingConfig
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO

FIX = (
    "use e.g. tracking.uri: http://127.0.0.1:5000, or a local store "
    "(tracking.uri: sqlite:///mlflow.db)"
)
ENV_FIX = (
    "fix or unset MLFLOW_TRACKING_URI (e.g. MLFLOW_TRACKING_URI=http://127.0.0.1:5000), or set "
    "tracking.uri, which takes precedence (tracking.uri: sqlite:///mlflow.db)"
)


class RecordingClient:
    """Stands in for MlflowClient: keeps what log_batch was handed."""

    batches: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, tracking_uri: str = "") -> None:
        self.uri = tracking_uri

    def get_experiment_by_name(self, name: str) -> None:
        return None

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        return "1"

    def create_run(self, exp_id: str, run_name: str, tags: dict[str, str]) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(run_id="r1"))

    def set_terminated(self, run_id: str, status: str) -> None:
        pass

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = ()) -> None:
        RecordingClient.batches.append(
            {
                "metrics": {m.key: (m.value, m.step) for m in metrics},
                "params": {p.key: p.value for p in params},
            }
        )


def _logged() -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for batch in RecordingClient.batches:
        out.update(batch["metrics"])
    return out


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, float]]:
    """Every TCP probe "succeeds" (as where a web server listens on localhost:80); recorded."""
    import socket

    calls: list[tuple[Any, float]] = []

    class Conn:
        def close(self) -> None:
            pass

    def connect(address: Any, timeout: float) -> Conn:
        calls.append((address, timeout))
        return Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return calls


# ---------------------------------------------------------------- 1. a malformed store URI


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://localhost:abc", "Port could not be cast to integer value as 'abc'"),
        ("https://mlflow.example:99999", "Port out of range 0-65535"),
        ("http://", "it has no host"),
        ("http://:5000", "it has no host"),
        ("http://[::1:5000", "Invalid IPv6 URL"),
    ],
)
def test_a_malformed_http_uri_is_a_params_error_before_any_probe(
    no_probe: list, uri: str, problem: str
) -> None:
    """A bad port raised urllib's bare ValueError (a traceback, exit 1); no host made the probe
    try localhost:80 and, where something answered there, MLflow failed minutes later."""
    with pytest.raises(ParamsError) as err:
        tracking.check_reachable(uri)
    assert str(err.value) == (
        f"tracking.uri: {uri!r} is not a valid MLflow tracking URI ({problem}); {FIX}"
    )
    assert no_probe == []  # refused before any connection


def test_well_formed_uris_pass(no_probe: list) -> None:
    for uri in ("http://127.0.0.1:5000", "https://mlflow.example", "sqlite:///m.db", "databricks"):
        tracking.check_reachable(uri)  # local stores are not probed
    assert no_probe == [(("127.0.0.1", 5000), 3.0), (("mlflow.example", 443), 3.0)]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://localhost:abc", "Port could not be cast to integer value as 'abc'"),
        (
            "localhost:5000",  # http:// forgotten: MLflow's UnsupportedModelRegistryStoreURI
            "MLflow has no store for the scheme 'localhost'; a server needs http:// or https://",
        ),
    ],
)
def test_a_stage_with_a_malformed_tracking_uri_exits_2_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, uri, problem
) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    argv = ["--params", str(REPO / "params.yaml"), "--set", f"tracking.uri={uri}"]
    argv += ["--dataset", "syn", "--embeddings", str(emb), "--metrics", str(tmp_path / "m.json")]
    argv += ["--sweep", str(tmp_path / "s.csv"), "--confusion", str(tmp_path / "c/c.png")]
    assert knn.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"tracking.uri: {uri!r} is not a valid MLflow tracking URI ({problem}); {FIX}"
    ]
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s.csv").exists()


def test_a_malformed_MLFLOW_TRACKING_URI_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, no_probe: list
) -> None:
    import mlflow.tracking

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", RecordingClient)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:abc")
    expected = (
        "MLFLOW_TRACKING_URI: 'http://localhost:abc' is not a valid MLflow tracking URI "
        f"(Port could not be cast to integer value as 'abc'); {ENV_FIX}"
    )
    with pytest.raises(ParamsError) as err, tracking.stage_run(TrackingConfig(), name="knn@x"):
        pass
    assert str(err.value) == expected
    with pytest.raises(ParamsError) as err:
        tracking.close_stale_runs(TrackingConfig())
    assert str(err.value) == expected
    # tracking.uri takes precedence: the variable is then neither used nor checked
    with tracking.stage_run(TrackingConfig(uri="http://127.0.0.1:5000"), name="knn@x") as run:
        assert run.active
    # an unreachable server from the variable is named by the variable too
    import socket

    def refused(address: Any, timeout: float) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(ParamsError, match=r"^MLFLOW_TRACKING_URI: the MLflow tracking server at "):
        tracking.close_stale_runs(TrackingConfig())


# ---------------------------------------------------------------- 2. an empty experiment name


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_an_empty_experiment_name_is_a_params_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """``""``: MLflow's "Invalid experiment name" traceback (exit 1); blanks: an experiment nobody
    sees in ``mlflow ui``, silently."""
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment=name)
    expected = (
        f"tracking.experiment: {name!r} is empty or blank; name the MLflow experiment, e.g. "
        "tracking.experiment: hashaudit (the default when the key is left out)"
    )
    with pytest.raises(ParamsError) as err, tracking.stage_run(config, name="knn@x"):
        pass
    assert str(err.value) == expected
    with pytest.raises(ParamsError) as err:
        tracking.close_stale_runs(config)
    assert str(err.value) == expected
    assert not (tmp_path / "m.db").exists()  # refused before the store was created


# ---------------------------------------------------------------- 3. colliding metric names


def test_two_metric_names_that_become_one_mlflow_key_raise() -> None:
    """``recall@10`` and ``recall_10`` both became ``recall_10``: MLflow kept one of the values."""
    RecordingClient.batches = []
    run = tracking.StageRun(RecordingClient(), "r1")
    with pytest.raises(ValueError) as err:
        run.log_metrics({"recall@10": 0.5, "recall_10": 0.25})
    assert str(err.value) == (
        "MLflow metric names 'recall@10' and 'recall_10' both become 'recall_10' (MLflow allows "
        "only letters, digits and _-. :/); rename one of them"
    )
    assert RecordingClient.batches == []
    with pytest.raises(ValueError, match="both become 'recall_10'"):  # tracking off: same bug
        tracking.StageRun(None, None).log_metrics({"recall@10": 0.5, "recall_10": 0.25})
    with pytest.raises(ValueError, match="MLflow param names 'lr@1' and 'lr_1'"):
        run.log_params({"lr@1": 1, "lr_1": 2})
    # names without a collision are logged as before (the report and mlflow ui read them)
    run.log_metrics({"precision@5": 0.5, "map": 0.25, "a/b c:d": 1})
    assert _logged() == {"a/b c:d": (1.0, 0), "map": (0.25, 0), "precision_5": (0.5, 0)}


def test_nested_and_dotted_names_that_flatten_to_one_key_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        tracking.flatten({"a": {"b": 1}, "a.b": 2})
    assert str(err.value) == "two entries flatten to the key 'a.b'; rename one of them"
    assert tracking.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": 3,
    }
    # record_metrics refuses before it writes the metrics JSON
    with pytest.raises(ValueError, match="both become 'auc_x'"):
        tracking.record_metrics(tmp_path / "m.json", {"auc@x": 0.5, "auc_x": 0.75}, _off())
    assert not (tmp_path / "m.json").exists()


def _off() -> tracking.StageRun:
    return tracking.StageRun(None, None)


# ---------------------------------------------------------------- 4. numpy metric values


def test_numpy_scalars_and_0d_arrays_are_logged_as_floats() -> None:
    """np.float32, np.int64 and 0-d arrays were skipped (not ``int``/``float`` instances);
    np.float64 (a ``float`` subclass) was the only numpy type logged."""
    RecordingClient.batches = []
    run = tracking.StageRun(RecordingClient(), "r1")
    run.log_metrics(
        {
            "f32": np.float32(0.25),
            "f16": np.float16(1.5),
            "i64": np.int64(7),
            "u8": np.uint8(200),
            "arr": np.array(2.5),
            "iarr": np.array(-3, dtype=np.int32),
            "f64": np.float64(0.125),
            "py_int": 3,
            "py_float": 0.5,
            # no real number: left out, as before
            "flag": True,
            "np_flag": np.bool_(True),
            "name": "dpsh",
            "vec": np.array([1.0, 2.0]),
            "none": None,
        },
        step=4,
    )
    logged = _logged()
    assert logged == {
        "arr": (2.5, 4),
        "f16": (1.5, 4),
        "f32": (0.25, 4),
        "f64": (0.125, 4),
        "i64": (7.0, 4),
        "iarr": (-3.0, 4),
        "py_float": (0.5, 4),
        "py_int": (3.0, 4),
        "u8": (200.0, 4),
    }
    assert all(type(value) is float for value, _ in logged.values())


def test_non_finite_metrics_are_left_out_of_mlflow_with_an_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The policy (unchanged): NaN and ±inf, Python or numpy, are not logged; now said."""
    RecordingClient.batches = []
    run = tracking.StageRun(RecordingClient(), "r1")
    with caplog.at_level(logging.INFO, logger="pipeline.tracking"):
        run.log_metrics(
            {
                "loss": float("nan"),
                "g32": np.float32("inf"),
                "h": np.array(-np.inf),
                "acc": np.float32(0.75),
            },
            step=2,
        )
    assert _logged() == {"acc": (0.75, 2)}
    assert (
        "MLflow: not logging non-finite metrics (step 2): g32=inf, h=-inf, loss=nan" in caplog.text
    )


def test_numpy_metrics_reach_a_real_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="study")
    metrics = {"auc": np.float32(0.75), "n": np.int64(12), "acc": np.array(0.5)}
    with tracking.stage_run(config, name="attack@x") as run:
        tracking.record_metrics(tmp_path / "m.json", metrics, run)
        run_id = run.run_id
    assert MlflowClient(tracking_uri=config.uri).get_run(run_id).data.metrics == {
        "acc": 0.5,
        "auc": 0.75,
        "n": 12.0,
    }
    assert json.loads((tmp_path / "m.json").read_text()) == {"acc": 0.5, "auc": 0.75, "n": 12}


# ---------------------------------------------------------------- 5. store lock files


def test_store_lock_files_stay_in_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never removed, by design (removing a flock'ed file lets two processes in at once: see
    ``_store_lock``), and never beside the store or in the repository."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    store = tmp_path / "store"
    store.mkdir()
    db = store / "m.db"
    with tracking._store_lock(f"sqlite:///{db}"):
        pass
    digest = hashlib.sha1(str(db).encode()).hexdigest()[:16]
    lock = temp / f"hashaudit-mlflow-{digest}.lock"
    assert [p.name for p in temp.iterdir()] == [lock.name] and lock.stat().st_size == 0
    assert list(store.iterdir()) == []
    with tracking._store_lock(f"sqlite:///{db}"):  # the kept file locks again
        pass
    with tracking._store_lock("http://127.0.0.1:5000"):  # other stores: no lock file
        pass
    assert [p.name for p in temp.iterdir()] == [lock.name]
