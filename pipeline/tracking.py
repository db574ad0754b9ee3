"""MLflow tracking for pipeline stages: one run per stage execution.

* Store: ``tracking.uri`` from params, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
  the working directory (MLflow's local default); one experiment per study (``tracking.experiment``).
* A run is named like its DVC stage (``train@breastmnist-dpsh-12``) and tagged with dataset, method,
  bits and the git commit.
* :func:`record_metrics` writes the stage's flat metrics JSON (the DVC metrics file) *and* logs the
  same numbers to MLflow in one call, so DVC and MLflow never disagree.
* Privacy: only parameters, aggregate metrics and small plots/configs are logged — never images,
  embeddings, codes or per-sample values.
* ``tracking.enabled: false`` (or ``HASHAUDIT_TRACKING=0``) turns every call into a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts import write_json
from pipeline.config import TrackingConfig, to_dict

log = logging.getLogger(__name__)

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_key(name: str) -> str:
    """MLflow accepts only letters, digits and ``_-. :/`` in metric and param names."""
    return _BAD_CHARS.sub("_", name)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def resolve_uri(config: TrackingConfig) -> str:
    return config.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class StageRun:
    """Handle on one MLflow run (or a no-op when tracking is disabled)."""

    def __init__(self, client: Any | None, run_id: str | None) -> None:
        self.client = client
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        flat = flatten(to_dict(params))
        items = [Param(metric_key(k), str(v)[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int = 0) -> None:
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, step)
            for k, v in sorted(flatten(metrics).items())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def tracking_enabled(config: TrackingConfig) -> bool:
    return config.enabled and os.environ.get("HASHAUDIT_TRACKING", "1") != "0"


@contextlib.contextmanager
def stage_run(
    config: TrackingConfig, *, name: str, tags: Mapping[str, Any] | None = None
) -> Iterator[StageRun]:
    """Open an MLflow run named ``name`` for one stage; it ends FAILED if the stage raises."""
    if not tracking_enabled(config):
        yield StageRun(None, None)
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(config)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(config.experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(config.experiment)
    all_tags = {"stage": name.split("@")[0], **{k: str(v) for k, v in (tags or {}).items()}}
    commit = git_commit()
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    log.info("MLflow run %s (%s) in %s", name, run.info.run_id, uri)
    handle = StageRun(client, run.info.run_id)
    try:
        yield handle
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def record_metrics(path: str | Path, metrics: Mapping[str, Any], run: StageRun) -> None:
    """Write the flat metrics JSON (DVC metrics) and log the same numbers to MLflow."""
    flat = flatten(metrics)
    write_json(path, flat)
    run.log_metrics(flat)
