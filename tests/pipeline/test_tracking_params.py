"""MLflow params longer than MLflow stores: cut visibly, never two values made one."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from pipeline import tracking
from pipeline.config import TrackingConfig


class ParamClient:
    """Stands in for MlflowClient: keeps the params log_batch was handed."""

    def __init__(self) -> None:
        self.params: dict[str, str] = {}

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = ()) -> None:
        self.params.update({p.key: p.value for p in params})


def test_params_longer_than_mlflow_stores_are_cut_with_a_marker_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``str(v)[:6000]`` gave two values that differ past character 6000 one MLflow value, and
    nothing said that either was incomplete."""
    long_a = "1, " * 2500  # 7500 characters
    long_b = "1, " * 2500 + "2"  # the same, one character longer
    client = ParamClient()
    run = tracking.StageRun(client, "r1")
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        run.log_params({"knn": {"k_sweep": long_a}, "other": long_b, "fits": "x" * 6000})
    marker_a = f"... [cut: 7500 chars, sha256 {hashlib.sha256(long_a.encode()).hexdigest()[:16]}]"
    marker_b = f"... [cut: 7501 chars, sha256 {hashlib.sha256(long_b.encode()).hexdigest()[:16]}]"
    assert len(marker_a) == 46 and len(marker_b) == 46
    assert (
        client.params
        == {
            "fits": "x" * 6000,  # exactly MLflow's limit: kept whole
            "knn.k_sweep": long_a[: 6000 - 46] + marker_a,
            "other": long_b[: 6000 - 46] + marker_b,
        }
    )
    assert client.params["knn.k_sweep"] != client.params["other"]
    assert all(len(v) <= 6000 for v in client.params.values())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "MLflow param knn.k_sweep: its value has 7500 characters, more than MLflow stores "
        f"(6000); logged cut short, ending in {marker_a!r} (the full value is in the stage's "
        "params and config files)",
        "MLflow param other: its value has 7501 characters, more than MLflow stores (6000); "
        f"logged cut short, ending in {marker_b!r} (the full value is in the stage's params and "
        "config files)",
    ]


def test_mlflow_stores_the_cut_value_as_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert MAX_PARAM_VAL_LENGTH == 6000  # the limit hashaudit cuts at
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="study")
    value = "ab" * 3100  # 6200 characters
    with tracking.stage_run(config, name="knn@x") as run:
        run.log_params({"long": value})
        run_id = run.run_id
    stored = MlflowClient(tracking_uri=config.uri).get_run(run_id).data.params["long"]
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    assert stored == value[:5954] + f"... [cut: 6200 chars, sha256 {digest}]"
