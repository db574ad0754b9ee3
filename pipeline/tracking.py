"""MLflow tracking for pipeline stages: one run per stage execution.

* Store: ``tracking.uri`` from params, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
  the working directory (MLflow's local default); one experiment per study (``tracking.experiment``).
* A run is named like its DVC stage (``train@breastmnist-dpsh-12``) and tagged with dataset, method,
  bits and the git commit.
* :func:`record_metrics` writes the stage's flat metrics JSON (the DVC metrics file) *and* logs the
  same numbers to MLflow in one call, so DVC and MLflow never disagree, and tags the run with the
  file's SHA-256 (:data:`METRICS_TAG`): the report's parent run nests exactly the runs whose files
  it reports (:func:`adopt_runs`).
* Privacy: only parameters, aggregate metrics and small plots/configs are logged — never images,
  embeddings, codes or per-sample values.
* ``tracking.enabled: false`` (or ``HASHAUDIT_TRACKING=0``) turns every call into a no-op.
* Metrics: every real number is logged as a float (Python or numpy scalars, 0-d arrays); NaN and
  ±inf never are (:meth:`StageRun.log_metrics`); two names MLflow would log under one key raise
  (:func:`metric_keys`). A param value longer than MLflow stores is cut with a marker (its length
  and SHA-256) and a warning (:func:`param_value`).
* Faults: a malformed URI (``http://host:abc``, ``http://`` without a host, ``localhost:5000``
  without a scheme), a sqlite store that cannot keep runs (in memory, at a folder, under a file,
  not writable), a store MLflow cannot open (``sqlite://m.db``, a file store such as ``./mlruns``,
  a file that is no database) and an empty ``tracking.experiment`` are one-line user errors
  (:func:`check_uri`, :func:`check_sqlite_store`, :func:`_client`, :func:`check_experiment`); an
  unreachable ``http(s)`` server fails in seconds naming the URI and the fix
  (:func:`check_reachable`); creating a fresh sqlite store is serialised between processes
  (``_store_lock``); a run ends KILLED on Ctrl-C or SIGTERM, FAILED on an error. A SIGKILLed stage cannot end its run, which stays RUNNING: ``python -m
  pipeline.tracking --close-stale`` marks KILLED every RUNNING run whose process (pid, host and, on
  Linux, the process's start are tagged on the run) is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import numbers
import os
import re
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import EmbeddingsFile, json_text, write_text
from pipeline.config import ParamsError, TrackingConfig, to_dict

log = logging.getLogger(__name__)

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_key(name: str) -> str:
    """MLflow accepts only letters, digits and ``_-. :/`` in metric and param names."""
    return _BAD_CHARS.sub("_", name)


def metric_keys(names: Iterable[str], *, what: str = "metric") -> dict[str, str]:
    """``name -> metric_key(name)`` for every name; a ValueError (a bug in a stage's naming) when
    two names become one MLflow key, which would silently keep only one of the two values. Names
    that need no change keep them: nothing is renamed."""
    keys: dict[str, str] = {}
    first: dict[str, str] = {}
    for name in sorted(names):
        key = metric_key(name)
        other = first.setdefault(key, name)
        if other != name:
            raise ValueError(
                f"MLflow {what} names {other!r} and {name!r} both become {key!r} (MLflow allows "
                "only letters, digits and _-. :/); rename one of them"
            )
        keys[name] = key
    return keys


def _real(value: Any) -> float | None:
    """``value`` as a float where it is a real number (``int``, ``float``, numpy scalars such as
    ``np.float32`` and ``np.int64``, 0-d arrays), NaN and ±inf included; else None (strings,
    bools, ``None``, arrays of several values)."""
    if isinstance(value, (np.ndarray, np.generic)):
        if value.ndim != 0:
            return None
        value = value.item()  # the Python scalar: float, int, bool, complex, str, ...
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; a ValueError when two entries flatten to one key
    (``{"a": {"b": 1}, "a.b": 2}``), which would silently keep only one of the two values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        items = flatten(value, full) if isinstance(value, Mapping) else {full: value}
        for name, leaf in items.items():
            if name in out:
                raise ValueError(f"two entries flatten to the key {name!r}; rename one of them")
            out[name] = leaf
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


#: the environment variable MLflow (and :func:`resolve_uri`) read the store URI from
URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(config: TrackingConfig) -> str:
    return config.uri or os.environ.get(URI_ENV) or DEFAULT_URI


def uri_source(config: TrackingConfig) -> str:
    """Where :func:`resolve_uri` took the URI from, as error messages name it: ``tracking.uri``
    (also for the built-in default) or ``MLFLOW_TRACKING_URI``."""
    return URI_ENV if not config.uri and os.environ.get(URI_ENV) else "tracking.uri"


def _uri_fix(source: str) -> str:
    if source == URI_ENV:
        return (
            f"fix or unset {URI_ENV} (e.g. {URI_ENV}=http://127.0.0.1:5000), or set "
            f"tracking.uri, which takes precedence (tracking.uri: {DEFAULT_URI})"
        )
    return (
        "use e.g. tracking.uri: http://127.0.0.1:5000, or a local store "
        f"(tracking.uri: {DEFAULT_URI})"
    )


def check_uri(uri: str, *, source: str = "tracking.uri") -> None:
    """A ParamsError naming ``source`` (:func:`uri_source`), the URI and the fix for an
    ``http(s)`` URI that MLflow cannot use: a port that is no number or out of range
    (``http://localhost:abc``), no host (``http://``, ``http://:5000``), a broken IPv6 address.
    Without it, ``urllib`` raised a bare ValueError (a traceback) or the probe of
    :func:`check_reachable` silently tried ``localhost``."""
    try:
        parsed = urllib.parse.urlparse(uri)
        problem = None
        if parsed.scheme in ("http", "https"):
            parsed.port  # noqa: B018 - raises ValueError for a bad port
            if not parsed.hostname:
                problem = "it has no host"
    except ValueError as err:
        problem = str(err)
    if problem is not None:
        raise ParamsError(
            f"{source}: {uri!r} is not a valid MLflow tracking URI ({problem}); {_uri_fix(source)}"
        )


def checked_store(config: TrackingConfig) -> tuple[str, str]:
    """The store URI of ``config`` and where it came from (:func:`uri_source`), after the checks
    every run needs before opening it: a named experiment (:func:`check_experiment`) and a
    well-formed, reachable URI (:func:`check_reachable`)."""
    check_experiment(config.experiment)
    uri, source = resolve_uri(config), uri_source(config)
    check_reachable(uri, source=source)
    check_sqlite_store(uri, source=source)
    return uri, source


def _sqlite_problem(uri: str) -> str | None:
    """Why the ``sqlite:`` store ``uri`` cannot keep runs, or None (also for other stores)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:
        return None  # MLflow's own message names the valid forms (_client)
    database = url.database
    if url.host:  # sqlite://m.db: a host where the path belongs
        return (
            f"{url.host!r} stands where a host goes; a database file takes three slashes "
            f"(sqlite:///{url.host}), four for an absolute path (sqlite:////data/mlflow.db)"
        )
    if database in (None, "", ":memory:") or database.startswith("file::memory:"):
        return "an in-memory database: every run is lost when the stage exits"
    db = Path(os.path.abspath(database))
    if db.is_dir():
        return f"{db} is a folder, not a database file"
    existing = db if db.exists() else next(p for p in db.parents if p.exists())
    if existing != db and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK):
        return f"{existing} is not writable"
    return None


def check_sqlite_store(uri: str, *, source: str = "tracking.uri") -> None:
    """A ParamsError naming ``source``, the URI and the fix for a ``sqlite:`` store that cannot
    keep runs: in memory (``sqlite://``, ``sqlite:///:memory:``: MLflow took the runs and lost
    them at exit, silently), a database path that is a folder (MLflow retried for about 100 s,
    then a traceback), one under a file, or not writable."""
    problem = _sqlite_problem(uri)
    if problem is not None:
        raise ParamsError(
            f"{source}: {uri!r} cannot hold an MLflow store ({problem}); {_uri_fix(source)}"
        )


def _client(uri: str, *, source: str) -> Any:
    """``MlflowClient(tracking_uri=uri)``; a URI of a scheme MLflow has no store for
    (``localhost:5000`` without ``http://``), or a store it cannot open (``sqlite://m.db``, a file
    store such as ``./mlruns``, a file that is no database, a missing database driver), is a
    ParamsError naming ``source`` instead of MLflow's traceback."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return MlflowClient(tracking_uri=uri)
    except UnsupportedModelRegistryStoreURIException:
        scheme = urllib.parse.urlparse(uri).scheme
        raise ParamsError(
            f"{source}: {uri!r} is not a valid MLflow tracking URI (MLflow has no store for the "
            f"scheme {scheme!r}; a server needs http:// or https://); {_uri_fix(source)}"
        ) from None
    except (MlflowException, SQLAlchemyError, OSError, ModuleNotFoundError) as err:
        # opening the store is all the constructor does: what fails there is the URI, the
        # store's file or a missing database driver, never a request hashaudit got wrong
        why = " ".join(str(getattr(err, "orig", None) or err).split())  # sqlalchemy: no SQL
        raise ParamsError(
            f"{source}: MLflow cannot open the store {uri!r} ({type(err).__name__}: {why}); "
            f"{_uri_fix(source)}"
        ) from None


def check_experiment(name: Any) -> None:
    """A ParamsError for an empty or whitespace-only ``tracking.experiment``: MLflow refused ``""``
    with a traceback and accepted ``"  "``, an experiment nobody can see in ``mlflow ui``."""
    if not isinstance(name, str) or not name.strip():
        raise ParamsError(
            f"tracking.experiment: {name!r} is empty or blank; name the MLflow experiment, e.g. "
            "tracking.experiment: hashaudit (the default when the key is left out)"
        )


#: MLflow error codes of a request the client got wrong: a hashaudit bug, which keeps its traceback
CLIENT_ERROR_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"})


# OSErrors about a missing or wrong-kind path. One naming a local file hashaudit handed MLflow
# (``local_paths``) is a bug and keeps its traceback; one about any other path (the artifact
# store's own directory, removed under a running stage) is the store failing
LOCAL_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _names_local_path(err: OSError, local_paths: Sequence[str | Path]) -> bool:
    wanted = {os.path.abspath(p) for p in local_paths}
    named = (getattr(err, "filename", None), getattr(err, "filename2", None))
    return any(isinstance(n, (str, Path)) and os.path.abspath(n) in wanted for n in named)


def is_store_fault(err: BaseException, *, local_paths: Sequence[str | Path] = ()) -> bool:
    """Whether ``err`` from an MLflow call is the tracking store failing (a server error or
    restart, a lost connection, a locked database, a full or vanished artifact store) rather
    than a request hashaudit got wrong. ``local_paths``: the local files the call was handed; a
    missing-path error naming one of them is a bug."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code not in CLIENT_ERROR_CODES
    if isinstance(err, LOCAL_PATH_ERRORS) and _names_local_path(err, local_paths):
        return False
    if isinstance(err, OSError):  # connection errors (requests' included), a full or read-only
        return True  # artifact store, I/O errors: all derive from OSError
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        return False
    return isinstance(err, OperationalError)


#: the longest param value MLflow stores (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``)
MAX_PARAM_CHARS = 6000


def param_value(name: str, value: Any) -> str:
    """``str(value)`` as an MLflow param value. One longer than MLflow stores
    (:data:`MAX_PARAM_CHARS`) is cut and ends in ``... [cut: <n> chars, sha256 <16 hex>]``, with a
    warning naming the param: a bare cut made two values that differ only past the limit look
    the same in MLflow, and nothing said the value was incomplete."""
    text = str(value)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    marker = f"... [cut: {len(text)} chars, sha256 {digest}]"
    log.warning(
        "MLflow param %s: its value has %d characters, more than MLflow stores (%d); logged cut "
        "short, ending in %r (the full value is in the stage's params and config files)",
        name,
        len(text),
        MAX_PARAM_CHARS,
        marker,
    )
    return text[: MAX_PARAM_CHARS - len(marker)] + marker


class StageRun:
    """Handle on one MLflow run (or a no-op when tracking is disabled).

    MLflow is bookkeeping: a store fault after the run started (:func:`is_store_fault`) never
    costs a stage its result. The failed call is logged as a warning, later calls are skipped,
    and the run is marked FAILED at the end (so :func:`adopt_runs` never nests an incomplete run),
    while the stage's files are written and it exits 0. A request hashaudit got wrong raises.
    """

    def __init__(self, client: Any | None, run_id: str | None) -> None:
        self.client = client
        self.run_id = run_id
        self.fault: str | None = None  # the first store fault, if any

    @property
    def active(self) -> bool:
        return self.client is not None and self.fault is None

    def _call(
        self, what: str, fn: Any, *args: Any, local_paths: Sequence[str | Path] = (), **kwargs: Any
    ) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:
            if not is_store_fault(err, local_paths=local_paths):
                raise
            self.record_fault(what, err)

    def record_fault(self, what: str, err: BaseException) -> None:
        """Note a store fault of ``what``: warn once, skip every later call, end the run FAILED."""
        self.fault = f"{what}: {type(err).__name__}: {err}"
        log.warning(
            "MLflow %s failed (%s: %s); the stage's files are complete, its MLflow run %s "
            "is incomplete and will be marked FAILED",
            what,
            type(err).__name__,
            err,
            self.run_id,
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        flat = flatten(to_dict(params))
        keys = metric_keys(flat, what="param")
        items = [Param(keys[k], param_value(k, v)) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self._call(
                "log_batch (params)", self.client.log_batch, self.run_id, params=items[i : i + 100]
            )
            if not self.active:
                return

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int = 0) -> None:
        """Log every real number as a float: ``int``, ``float``, numpy scalars (``np.float32``,
        ``np.int64``, ...) and 0-d arrays. Left out: what is no real number (strings, bools,
        ``None``, arrays of several values) and, by policy, NaN and ±inf, with an info line
        naming them (a diverged per-epoch ``loss``; :func:`record_metrics` never gets this far
        with one: its JSON refuses them). Names are checked even when tracking is off: two that
        become one MLflow key (:func:`metric_keys`) are a bug."""
        flat = flatten(metrics)
        keys = metric_keys(flat)
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        non_finite = []
        for name, value in sorted(flat.items()):
            number = _real(value)
            if number is not None and math.isfinite(number):
                items.append(Metric(keys[name], number, now, step))
            elif number is not None:
                non_finite.append(f"{name}={number}")
        if non_finite:
            log.info(
                "MLflow: not logging non-finite metrics (step %d): %s", step, ", ".join(non_finite)
            )
        for i in range(0, len(items), 500):
            self._call(
                "log_batch (metrics)",
                self.client.log_batch,
                self.run_id,
                metrics=items[i : i + 500],
            )
            if not self.active:
                return

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).exists():  # checked even when tracking is off: a bug either way
            raise FileNotFoundError(f"log_artifact: {path} does not exist")
        if self.active:
            self._call(
                "log_artifact",
                self.client.log_artifact,
                self.run_id,
                str(path),
                artifact_path,
                local_paths=(path,),
            )

    def set_tag(self, key: str, value: str) -> None:
        if self.active:
            self._call("set_tag", self.client.set_tag, self.run_id, key, value)


def tracking_enabled(config: TrackingConfig) -> bool:
    """``tracking.enabled``, unless ``HASHAUDIT_TRACKING=0`` turns it off (``1`` or empty: as
    params say). Any other value is refused: ``false``, ``no`` or ``off`` read as on, so the
    stage logged to a store the user had asked it to leave alone."""
    env = os.environ.get("HASHAUDIT_TRACKING") or "1"
    if env not in ("0", "1"):
        raise ParamsError(
            f"HASHAUDIT_TRACKING={env!r}: use 0 (no MLflow logging) or 1 (log as "
            "tracking.enabled says), or unset it"
        )
    return config.enabled and env == "1"


#: seconds to wait for a remote tracking server's TCP port before giving up
CONNECT_TIMEOUT_S = 3.0
# SHA-256 of the metrics file a run wrote (record_metrics); the report nests the run by it
METRICS_TAG = "hashaudit.metrics_sha256"


def check_reachable(
    uri: str, *, timeout: float = CONNECT_TIMEOUT_S, source: str = "tracking.uri"
) -> None:
    """Fail fast when an ``http(s)://`` tracking server does not answer: MLflow itself retries
    for minutes before the first error. Local stores (sqlite, files) are not checked, nor a
    server reached through ``HTTP(S)_PROXY`` (requests, and so MLflow, use it; a direct probe
    would fail where direct egress is blocked). A malformed URI fails first (:func:`check_uri`);
    ``source``: what the messages name (:func:`uri_source`)."""
    check_uri(uri, source=source)
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    import requests

    if requests.utils.get_environ_proxies(uri):  # MLflow goes through the proxy: no direct probe
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ParamsError(
            f"{source}: the MLflow tracking server at {uri} is unreachable ({err}); start it, "
            "or set tracking.enabled: false (or HASHAUDIT_TRACKING=0), or use a local store "
            "(tracking.uri: sqlite:///mlflow.db)"
        ) from None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the creation of a local sqlite store between processes.

    MLflow creates and migrates a fresh sqlite store on first use; two stages doing that at once
    (``dvc repro --jobs``, two terminals) race, and one fails ("duplicate column name: step").
    An exclusive ``flock`` on a lock file in the temp folder, keyed by the database's absolute
    path, makes the second wait until the first has finished. No-op for other stores and where
    ``fcntl`` is missing (Windows).

    The lock file (``$TMPDIR/hashaudit-mlflow-<16 hex>.lock``, empty, one per store path) is never
    removed, on purpose: ``flock`` locks the open file, not its name. A holder that unlinked it on
    release would leave a waiter locking the unlinked file while the next opener creates a new
    one and locks that: two processes inside at once, the race above back. The files live in the
    system temp folder (not the repository, so nothing for git or DVC to ignore, unless
    ``TMPDIR`` points into it) and go with it; deleting them while no stage runs is harmless.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    digest = hashlib.sha1(str(db).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"hashaudit-mlflow-{digest}.lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of a local sqlite store keeps its run artifacts: ``mlartifacts/``
    beside the database file (MLflow's default is ``./mlruns`` of whatever folder the stage runs
    in, so a store elsewhere scattered its artifacts over working directories). None for other
    stores (their server decides)."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "mlartifacts").as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The absolute database path of a ``sqlite:///`` store URI (without a ``?query`` such as
    ``?timeout=30``: the same file, so the same store lock); None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(os.path.abspath(uri[len(prefix) :].split("?", 1)[0]))


def _experiment_id(client: Any, name: str, *, location: str | None = None) -> str:
    """The id of experiment ``name``, created when missing. A deleted one (``mlflow ui``'s
    delete) is refused with the fix: MLflow would refuse the run with a bare exception. Two
    stages creating it at once on a server: the second takes the one the first made."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ParamsError(
            f"tracking.experiment: the MLflow experiment {name!r} (id {exp.experiment_id}) is "
            f"deleted; restore it (mlflow experiments restore --experiment-id "
            f"{exp.experiment_id}) or set another tracking.experiment"
        )
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as err:
        if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


@contextlib.contextmanager
def stage_run(
    config: TrackingConfig, *, name: str, tags: Mapping[str, Any] | None = None
) -> Iterator[StageRun]:
    """Open an MLflow run named ``name`` for one stage.

    It ends FINISHED on success, KILLED on Ctrl-C or SIGTERM (see
    :func:`pipeline.common.run_main`), FAILED on any other error. A process killed with SIGKILL
    (``kill -9``, the OOM killer) cannot mark its run: it stays RUNNING (see
    :func:`close_stale_runs`).
    """
    if not tracking_enabled(config):
        yield StageRun(None, None)
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # a server that accepts the connection but stalls: fail in seconds, not after minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri, source = checked_store(config)
    with _store_lock(uri):
        client = _client(uri, source=source)
        exp_id = _experiment_id(client, config.experiment, location=artifact_location(uri))
    all_tags = {"stage": name.split("@")[0], **{k: str(v) for k, v in (tags or {}).items()}}
    all_tags.update({"hashaudit.pid": str(os.getpid()), "hashaudit.host": socket.gethostname()})
    started = process_start(os.getpid())
    if started is not None:  # tells this process from a later one given the same pid
        all_tags["hashaudit.process_start"] = started
    commit = git_commit()
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    log.info("MLflow run %s (%s) in %s", name, run.info.run_id, uri)
    handle = StageRun(client, run.info.run_id)

    def end(status: str) -> None:
        try:
            client.set_terminated(run.info.run_id, status=status)
        except Exception as err:  # the files are written: a store fault must not fail the stage
            if not is_store_fault(err):
                raise
            log.warning("MLflow could not mark run %s %s (%s)", run.info.run_id, status, err)

    try:
        yield handle
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM via pipeline.common.StageTerminated
        end("KILLED")
        raise
    except BaseException:
        end("FAILED")
        raise
    end("FINISHED" if handle.fault is None else "FAILED")


def adopt_runs(parent: StageRun, runs: Mapping[str, str | Path], *, dataset: str) -> list[str]:
    """Nest under ``parent`` the run that wrote each metrics file of ``runs`` (run name -> the
    metrics file that run writes), by setting MLflow's ``mlflow.parentRunId`` tag, so ``mlflow ui``
    shows a study as one expandable parent run.

    The run that wrote a file is the newest FINISHED run of that name (tagged ``dataset``) whose
    :data:`METRICS_TAG` is the SHA-256 of the file as it is now (:func:`record_metrics` tags it).
    A run of the same name that wrote other numbers (a hand run after ``dvc repro``, an older
    parameter setting) is therefore never nested in its place. Returns the names with no such run
    (a missing file, a stage run with tracking off, or a run by a hashaudit that did not tag its
    file); nothing when ``parent`` is a no-op."""
    if not parent.active or not runs:
        return []
    wanted: dict[str, str] = {}  # local files read outside the store-fault net: errors are bugs
    for name, path in runs.items():
        if Path(path).is_file():
            wanted[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    try:
        return _adopt(parent, runs, wanted, dataset=dataset)
    except Exception as err:
        if not is_store_fault(err):
            raise
        parent.record_fault("adopt_runs", err)
        return sorted(runs)


def _adopt(
    parent: StageRun, runs: Mapping[str, str | Path], wanted: Mapping[str, str], *, dataset: str
) -> list[str]:
    client = parent.client
    exp_id = client.get_run(parent.run_id).info.experiment_id
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string="attributes.status = 'FINISHED'",  # dataset compared below: any name
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        for run in page:
            name = run.info.run_name
            if run.data.tags.get("dataset") != dataset or run.info.run_id == parent.run_id:
                continue
            tagged = run.data.tags.get(METRICS_TAG)
            if name in wanted and name not in found and tagged == wanted[name]:
                found[name] = run.info.run_id
        token = page.token
        if not token:
            break
    for run_id in found.values():
        client.set_tag(run_id, "mlflow.parentRunId", parent.run_id)
    return sorted(set(runs) - set(found))


def close_stale_runs(config: TrackingConfig) -> list[str]:
    """Mark KILLED every RUNNING run of this experiment that was started on this host by a process
    that no longer exists (a stage killed with SIGKILL cannot do it itself). Returns their names.
    A pid now held by another process (reused after a reboot or a wrap of the pid counter) counts
    as gone where the run recorded its process's start (:func:`process_start`, Linux).

    Command line: ``python -m pipeline.tracking --close-stale [--params params.yaml]``.
    """
    if not tracking_enabled(config):
        return []
    uri, source = checked_store(config)
    client = _client(uri, source=source)
    exp = client.get_experiment_by_name(config.experiment)
    if exp is None:
        return []
    host = socket.gethostname()
    closed = []
    for run in client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
    ):
        tags = run.data.tags
        pid = tags.get("hashaudit.pid", "")
        if tags.get("hashaudit.host") != host or not pid.isdigit():
            continue
        if _alive(int(pid), tags.get("hashaudit.process_start")):
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_name or run.info.run_id)
    return closed


def process_start(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks since boot>`` of process ``pid`` (Linux ``/proc``:
    ``/proc/sys/kernel/random/boot_id`` and field 22 of ``/proc/<pid>/stat``), which no later
    process with the same pid shares; ``None`` where ``/proc`` does not tell (another OS, the
    process gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the name in (...) may hold spaces
    return f"{boot}:{fields[19]}" if len(fields) > 19 and boot else None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether the process that tagged a run still runs: ``pid`` exists and, where the run
    recorded its :func:`process_start`, is that same process (not a later one given the pid
    after a reboot or after the pid counter wrapped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


def epsilon_text(eps: float) -> str:
    """ε as run names and tags spell it: ``8``, ``0.5``, ``inf`` (``:g``), or every digit where
    ``:g``'s six would merge two budgets (``0.1234567`` and ``0.1234568`` both read ``0.123457``;
    the report finds runs by name, so one release's runs went unreported without a word)."""
    short = f"{float(eps):g}"
    return short if float(short) == float(eps) else repr(float(eps))


def defence_of(config: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    """``(stage suffix, name suffix, tags)`` naming the defence behind a head's ``config.json``.

    A DP-SGD head (a ``dp`` block) is ``_dp`` / ``-eps<target ε>``, a randomised-response release
    (a ``release`` block, mechanism ``rr``) ``_rr`` / ``-eps<ε_code>``, a k-anonymous release
    ``_kanon``, a plain head no suffix. MLflow run names are built from them, so that
    ``evaluate_dp@breastmnist-csq-12-eps8`` reads like its DVC stage and no two stages of a study
    share a run name; the ``defence`` tag lets ``mlflow ui`` filter and group by it.
    """
    info = config.get("release")
    if isinstance(info, Mapping) and info.get("mechanism") == "rr":
        eps = epsilon_text(info["epsilon_code"])
        return "_rr", f"-eps{eps}", {"defence": "rr", "epsilon_code": eps}
    if isinstance(info, Mapping) and info.get("mechanism") == "kanon":
        return "_kanon", "", {"defence": "kanon", "release_k": str(info.get("k"))}
    dp = config.get("dp")
    if isinstance(dp, Mapping) and "dp_target_epsilon" in dp:
        eps = epsilon_text(dp["dp_target_epsilon"])
        return "_dp", f"-eps{eps}", {"defence": "dp", "dp_target_epsilon": eps}
    return "", "", {"defence": "none"}


def head_run_name(
    stage: str, config: Mapping[str, Any], dataset: str, method: str, bits: int
) -> str:
    """The MLflow run name of ``stage`` working on one head or release (see :func:`defence_of`)."""
    stage_suffix, name_suffix, _ = defence_of(config)
    return f"{stage}{stage_suffix}@{dataset}-{method}-{bits}{name_suffix}"


def head_tags(
    dataset: str,
    method_name: str,
    bits: int,
    emb: EmbeddingsFile,
    *,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The MLflow tags of every stage that works on one head (train, train_dp, evaluate);
    ``emb``: the embeddings file as read (before ``attack.withhold_label``). The ``embeddings`` tag
    is ``fingerprint`` where given (what the head's or release's config records: a DP head's or a
    release's :func:`pipeline.artifacts.public_fingerprint`), else the file's content
    fingerprint."""
    return {
        "dataset": dataset,
        "method": method_name,
        "bits": bits,
        "backbone": emb.backbone,
        "embeddings": fingerprint or emb.fingerprint,
    }


def record_metrics(
    path: str | Path,
    metrics: Mapping[str, Any],
    run: StageRun,
    *,
    logged_as_history: tuple[str, ...] = (),
) -> None:
    """Write the flat metrics JSON (DVC metrics), log the same numbers to MLflow and tag the run
    with the file's SHA-256 (:data:`METRICS_TAG`, read by :func:`adopt_runs`).

    Keys in ``logged_as_history`` were already logged to MLflow step by step (e.g. the per-epoch
    ``loss``); logging their final value again at step 0 would put two values at step 0 of that
    history, so they go to the JSON only (MLflow's latest value of the history is the same number).
    """
    flat = flatten(metrics)
    metric_keys(flat)  # a naming collision is a bug: raise before the file is written
    text = json_text(flat)
    write_text(path, text)
    run.log_metrics({k: v for k, v in flat.items() if k not in logged_as_history})
    run.set_tag(METRICS_TAG, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.common import load, run_main

    def body(args_list: list[str] | None) -> None:
        parser = argparse.ArgumentParser(description="MLflow housekeeping for hashaudit runs.")
        parser.add_argument("--params", default="params.yaml")
        parser.add_argument("--set", dest="overrides", action="append", default=[])
        parser.add_argument(
            "--close-stale",
            action="store_true",
            required=True,
            help="mark KILLED the RUNNING runs whose stage process (on this host) is gone",
        )
        args = parser.parse_args(args_list)
        closed = close_stale_runs(load(args).tracking)
        log.info("marked %d stale run(s) KILLED: %s", len(closed), ", ".join(closed) or "-")

    return run_main(body, argv)


if __name__ == "__main__":
    raise SystemExit(_main())
