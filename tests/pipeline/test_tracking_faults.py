"""MLflow faults (issue 8): concurrent creation of a fresh sqlite store, an unreachable server,
SIGTERM / Ctrl-C / SIGKILL of a stage, a killed parent, and the per-epoch loss history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline import knn, tracking
from pipeline.artifacts import save_embeddings
from pipeline.config import TrackingConfig
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO

# A stand-in stage: waits for "go" (so that every worker creates the fresh store at the same
# moment), opens its MLflow run, says it is ready, then works for two minutes.
WORKER = """
import os, sys, time
from pathlib import Path
from typing import ClassVar
from pipeline import tracking
from pipeline.common import run_main
from pipeline.config import TrackingConfig

uri, name, folder = sys.argv[1:4]
folder = Path(folder)

def body(argv):
    while not (folder / "go").exists():
        time.sleep(0.01)
    with tracking.stage_run(TrackingConfig(uri=uri), name=name):
        (folder / f"{name}.ready").write_text(str(os.getpid()))
        time.sleep(120)

sys.exit(run_main(body, None))
"""

# Its parent, standing in for `dvc`: starts the worker and waits on it.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
child.wait()
"""


def _state(pid: int) -> str:
    """'gone', 'zombie' or 'alive' (a reaped or zombie process has stopped running)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "gone"
    return "zombie" if "State:\tZ" in status else "alive"


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow  # four processes create one fresh store: about a minute on 2 busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")
def test_concurrent_store_creation_and_signals_mark_runs(tmp_path: Path, monkeypatch) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    (tmp_path / "parent.py").write_text(PARENT)
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    (tmp_path / "fresh").mkdir()
    env = {**os.environ, "HASHAUDIT_TRACKING": "1", "PYTHONPATH": str(REPO)}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(worker), uri, name, str(tmp_path)],
            env=env,
            cwd=tmp_path,  # MLflow puts its artifact folder (mlruns/) in the working directory
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("term", "int", "kill")
    }
    dvc = subprocess.Popen(  # the "dvc" whose stage must not outlive it
        [sys.executable, str(tmp_path / "parent.py"), str(worker), uri, "orphan", str(tmp_path)],
        env={**env, "DVC_STAGE": "train@x"},  # dvc sets it for every stage command
        cwd=tmp_path,
    )
    (tmp_path / "go").touch()  # four processes create the fresh store at once
    names = [*procs, "orphan"]
    _wait(
        lambda: (
            all((tmp_path / f"{n}.ready").exists() for n in names)
            or any(p.poll() is not None for p in procs.values())
        ),
        120,
        "the workers' runs",
    )
    failed = {n: p.stderr.read() for n, p in procs.items() if p.poll() is not None}
    assert not failed, failed  # before the lock, one failed: "duplicate column name: step"

    procs["term"].send_signal(signal.SIGTERM)
    procs["int"].send_signal(signal.SIGINT)
    procs["kill"].send_signal(signal.SIGKILL)
    dvc.send_signal(signal.SIGKILL)  # kill -9 of dvc: its child gets SIGTERM (PR_SET_PDEATHSIG)
    orphan = int((tmp_path / "orphan.ready").read_text())
    codes = {n: p.wait(timeout=60) for n, p in procs.items()}
    assert codes == {"term": 143, "int": 130, "kill": -signal.SIGKILL}
    for name in ("term", "int"):
        err = procs[name].stderr.read()
        assert "no output of this stage was written" in err and "Traceback" not in err
    dvc.wait(timeout=10)
    _wait(lambda: _state(orphan) != "alive", 30, "the orphaned stage to stop")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hashaudit")

    def statuses() -> dict[str, str]:
        return {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}

    _wait(lambda: statuses()["orphan"] == "KILLED", 30, "the orphan to mark its run")
    assert statuses() == {"term": "KILLED", "int": "KILLED", "kill": "RUNNING", "orphan": "KILLED"}
    # a SIGKILLed stage cannot mark its run; the cleanup command finds it by its dead pid
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    assert tracking.close_stale_runs(TrackingConfig(uri=uri)) == ["kill"]
    assert statuses()["kill"] == "KILLED"


def test_unreachable_tracking_server_fails_fast(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens there
    argv = ["--params", str(REPO / "params.yaml"), "--set", f"tracking.uri={uri}"]
    argv += ["--dataset", "syn", "--embeddings", str(emb), "--metrics", str(tmp_path / "m.json")]
    argv += ["--sweep", str(tmp_path / "s.csv"), "--confusion", str(tmp_path / "c/c.png")]
    t0 = time.monotonic()
    assert knn.main(argv) == 2
    assert time.monotonic() - t0 < 15
    assert f"tracking server at {uri} is unreachable" in caplog.text
    assert "tracking.enabled: false" in caplog.text and "sqlite:///mlflow.db" in caplog.text
    assert not (tmp_path / "m.json").exists()


def test_check_reachable_times_out_in_seconds(monkeypatch) -> None:
    """A host that never answers (a black-holed address): the connect times out after
    CONNECT_TIMEOUT_S instead of MLflow's minutes of retries."""
    import socket

    from pipeline.config import ParamsError

    calls = []

    def never_answers(address, timeout):
        calls.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    with pytest.raises(
        ParamsError, match=r"at https://mlflow\.example:5000 is unreachable \(timed"
    ):
        tracking.check_reachable("https://mlflow.example:5000")
    assert calls == [tracking.CONNECT_TIMEOUT_S] and tracking.CONNECT_TIMEOUT_S <= 5
    tracking.check_reachable("sqlite:///x.db")  # local stores are not probed


class FakeClient:
    """Stands in for MlflowClient: records how each run ends."""

    ended: ClassVar[list[str]] = []

    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name, artifact_location=None):
        return "1"

    def create_run(self, exp_id, run_name, tags):
        from types import SimpleNamespace

        assert tags["hashaudit.pid"] == str(os.getpid()) and tags["hashaudit.host"]
        return SimpleNamespace(info=SimpleNamespace(run_id="r1"))

    def set_terminated(self, run_id, status):
        FakeClient.ended.append(status)


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (None, "FINISHED"),
        (KeyboardInterrupt, "KILLED"),
        ("terminated", "KILLED"),
        (ValueError, "FAILED"),
    ],
)
def test_stage_run_marks_how_the_stage_ended(monkeypatch, raised, status) -> None:
    import mlflow.tracking

    from pipeline.common import StageTerminated

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", FakeClient)
    FakeClient.ended = []
    error = StageTerminated if raised == "terminated" else raised
    config = TrackingConfig(uri="sqlite:///unused.db")
    if error is None:
        with tracking.stage_run(config, name="knn@x"):
            pass
    else:
        with pytest.raises(error), tracking.stage_run(config, name="knn@x"):
            raise error
    assert FakeClient.ended == [status]


def test_store_creation_is_serialised_between_openers(tmp_path: Path) -> None:
    """Two openers of one sqlite store: the second waits until the first has created it."""
    import threading

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    events: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with tracking._store_lock(uri):
            first_in.set()
            time.sleep(0.3)
            events.append("first done")

    def second() -> None:
        first_in.wait()
        with tracking._store_lock(uri):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["first done", "second in"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DVC_STAGE": "train@x"}, 15),  # under dvc: SIGTERM when the parent dies
        ({}, 0),  # a plain command line (nohup ... &) outlives its shell
        ({"DVC_STAGE": "train@x", "HASHAUDIT_DIE_WITH_PARENT": "0"}, 0),
    ],
)
def test_die_with_parent_only_under_dvc(env: dict[str, str], expected: int) -> None:
    script = (
        "import ctypes; from pipeline.common import die_with_parent; die_with_parent(); "
        "sig = ctypes.c_int(); libc = ctypes.CDLL(None); libc.prctl(2, ctypes.byref(sig), 0, 0, 0); "
        "print(sig.value)"  # 2 = PR_GET_PDEATHSIG
    )
    base = {
        k: v for k, v in os.environ.items() if k not in ("DVC_STAGE", "HASHAUDIT_DIE_WITH_PARENT")
    }
    res = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(res.stdout.strip()) == expected


class FlakyClient(FakeClient):
    """A store that fails on the first metrics batch, with a store fault or a client error."""

    error_code = "TEMPORARILY_UNAVAILABLE"  # a name of mlflow.protos.databricks_pb2
    tags: ClassVar[list[tuple[str, str]]] = []

    def log_batch(self, run_id, metrics=(), params=()):
        from mlflow.exceptions import MlflowException
        from mlflow.protos import databricks_pb2

        if metrics:
            code = getattr(databricks_pb2, self.error_code)
            raise MlflowException("503 Service Unavailable", error_code=code)

    def set_tag(self, run_id, key, value):
        FlakyClient.tags.append((key, value))


def test_a_store_fault_while_logging_keeps_the_stages_files(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """MLflow is bookkeeping: the metrics JSON (and every file of the atomic block) is written, the
    stage ends normally, later MLflow calls are skipped and the run is marked FAILED."""
    import mlflow.tracking

    from pipeline.artifacts import atomic_outputs, write_json

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", FlakyClient)
    FakeClient.ended, FlakyClient.tags = [], []
    config = TrackingConfig(uri="sqlite:///unused.db")
    with tracking.stage_run(config, name="attack@x") as run, atomic_outputs():
        write_json(tmp_path / "big-result.json", {"hours": 5})
        tracking.record_metrics(tmp_path / "m.json", {"auc": 0.5}, run)
    assert (tmp_path / "big-result.json").is_file() and (tmp_path / "m.json").is_file()
    assert FakeClient.ended == ["FAILED"] and FlakyClient.tags == []  # the tag call was skipped
    assert "MLflow log_batch (metrics) failed" in caplog.text and "marked FAILED" in caplog.text


def test_a_request_hashaudit_got_wrong_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    """An invalid request is a bug, not a store fault: it propagates and nothing is written."""
    import mlflow.tracking
    from mlflow.exceptions import MlflowException

    from pipeline.artifacts import atomic_outputs

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.setattr(FlakyClient, "error_code", "INVALID_PARAMETER_VALUE")
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", FlakyClient)
    FakeClient.ended = []
    config = TrackingConfig(uri="sqlite:///unused.db")
    with (
        pytest.raises(MlflowException, match="503"),
        tracking.stage_run(config, name="attack@x") as run,
        atomic_outputs(),
    ):
        tracking.record_metrics(tmp_path / "m.json", {"auc": 0.5}, run)
    assert not (tmp_path / "m.json").exists() and FakeClient.ended == ["FAILED"]


def test_local_path_errors_are_bugs_not_store_faults(tmp_path: Path) -> None:
    """Every OSError counted as a store fault, so logging a file that was never written (a bug in
    a stage) became a warning and a FAILED run. Only the store's faults are tolerated now:
    connection, timeout, a full or read-only store; a missing local path keeps its traceback."""
    import errno

    assert tracking.is_store_fault(ConnectionError("reset by peer"))
    assert tracking.is_store_fault(TimeoutError("read timed out"))
    assert tracking.is_store_fault(OSError(errno.ENOSPC, "No space left on device"))
    mine = tmp_path / "plot.png"
    gone = FileNotFoundError(errno.ENOENT, "no such file", str(mine))
    assert not tracking.is_store_fault(gone, local_paths=[mine])
    assert not tracking.is_store_fault(
        IsADirectoryError(errno.EISDIR, "is a directory", str(tmp_path)), local_paths=[tmp_path]
    )
    # the same errors about the store's own paths (an artifact directory removed under a running
    # stage) are the store failing, as is one that names no path
    store_dir = str(tmp_path / "mlruns" / "0" / "r1" / "artifacts")
    assert tracking.is_store_fault(FileNotFoundError(errno.ENOENT, "no such file", store_dir))
    assert tracking.is_store_fault(
        FileNotFoundError(errno.ENOENT, "no such file", store_dir), local_paths=[mine]
    )
    assert tracking.is_store_fault(gone)  # a call that was handed no local path

    logged: list[str] = []

    class Client:
        def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
            if not Path(path).exists():  # what MlflowClient does with a missing local file
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            logged.append(Path(path).name)

    run = tracking.StageRun(Client(), "r1")
    with pytest.raises(FileNotFoundError, match=r"never-written\.png"):
        run.log_artifact(tmp_path / "never-written.png")
    assert run.fault is None and run.active
    (tmp_path / "plot.png").write_bytes(b"png")
    run.log_artifact(tmp_path / "plot.png")
    assert logged == ["plot.png"]
    # tracking off: the same bug is still caught
    with pytest.raises(FileNotFoundError, match=r"never-written\.png"):
        tracking.StageRun(None, None).log_artifact(tmp_path / "never-written.png")

    class VanishedStore:  # the artifact store's directory was removed mid-run
        def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", store_dir)

    run = tracking.StageRun(VanishedStore(), "r1")
    run.log_artifact(tmp_path / "plot.png")  # a warning and a FAILED run, not a lost stage
    assert run.fault is not None and "log_artifact" in run.fault and not run.active


def test_a_deleted_experiment_is_one_line_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    """Deleting the experiment in ``mlflow ui`` made every later stage exit 1 with MLflow's
    INVALID_PARAMETER_VALUE traceback; now it is a user error naming the restore command."""
    from mlflow.tracking import MlflowClient

    from pipeline.config import ParamsError

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="study")
    with tracking.stage_run(config, name="knn@syn"):
        pass
    client = MlflowClient(tracking_uri=config.uri)
    exp_id = client.get_experiment_by_name("study").experiment_id
    client.delete_experiment(exp_id)
    with (
        pytest.raises(ParamsError, match=rf"'study' \(id {exp_id}\) is deleted; restore it"),
        tracking.stage_run(config, name="knn@syn"),
    ):
        pass


def test_an_experiment_created_meanwhile_by_another_stage_is_taken() -> None:
    """Two stages on a fresh server: the second's create_experiment gets RESOURCE_ALREADY_EXISTS
    (it crashed); it now takes the experiment the first made."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    class Client:
        looked: ClassVar[list[str]] = []

        def get_experiment_by_name(self, name):
            self.looked.append(name)
            if len(self.looked) == 1:
                return None  # not there yet when this stage looked

            class Exp:
                experiment_id, lifecycle_stage = "7", "active"

            return Exp()

        def create_experiment(self, name, artifact_location=None):
            raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)

    assert tracking._experiment_id(Client(), "study") == "7"


def test_a_server_behind_a_proxy_is_not_probed_directly(monkeypatch) -> None:
    """MLflow reaches the server through HTTP(S)_PROXY; the direct TCP probe failed where direct
    egress is blocked, so every stage exited 2 with "unreachable"."""
    import socket

    from pipeline.config import ParamsError

    def blocked(*args, **kwargs):
        raise OSError("direct connections are blocked")

    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    tracking.check_reachable("http://mlflow.example:5000")  # no error: the proxy will carry it
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("http_proxy", raising=False)
    with pytest.raises(
        ParamsError, match=r"at http://mlflow\.example:5000 is unreachable \(direct"
    ):
        tracking.check_reachable("http://mlflow.example:5000")


def test_a_sqlite_store_keeps_its_artifacts_beside_the_database(
    tmp_path: Path, monkeypatch
) -> None:
    """MLflow's default artifact root is ./mlruns of the working directory: a store in
    tmp_path (or any absolute sqlite path) wrote its runs' artifacts into wherever the stage ran
    (the tests filled the repository's mlruns/). New experiments now use mlartifacts/ beside the
    database."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'store' / 'm.db'}", experiment="study")
    (tmp_path / "store").mkdir()
    note = tmp_path / "note.txt"
    note.write_text("x")
    with tracking.stage_run(config, name="knn@syn") as run:
        run.log_artifact(note)
    exp = MlflowClient(tracking_uri=config.uri).get_experiment_by_name("study")
    assert exp.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()
    assert list((tmp_path / "store" / "mlartifacts").rglob("note.txt"))
    assert not (work / "mlruns").exists()


@pytest.mark.skipif(
    tracking.process_start(os.getpid()) is None, reason="needs Linux /proc to tell processes apart"
)
def test_close_stale_tells_a_reused_pid_from_the_run_s_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid alive again under another process (after a reboot or a wrap of the pid counter) kept a
    SIGKILLed stage's run RUNNING for good; the run's recorded process start tells them apart."""
    own = tracking.process_start(os.getpid())
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from pipeline import tracking as t; print(t.process_start(os.getpid()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.strip()
    assert own == tracking.process_start(os.getpid()) and child not in ("None", own)
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.stage_run(TrackingConfig(uri=uri), name="warm"):
        pass  # creates the store and the experiment
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hashaudit").experiment_id
    host, pid = __import__("socket").gethostname(), str(os.getpid())
    for name, start in (("this", own), ("reused", child), ("unrecorded", None)):
        tags = {"hashaudit.pid": pid, "hashaudit.host": host}
        if start is not None:
            tags["hashaudit.process_start"] = start
        client.create_run(exp, run_name=name, tags=tags)
    # the pid is alive (this test's process), but only "this" and "unrecorded" may be its runs
    assert tracking.close_stale_runs(TrackingConfig(uri=uri)) == ["reused"]
    status = {r.info.run_name: r.info.status for r in client.search_runs([exp])}
    assert status == {
        "warm": "FINISHED",
        "this": "RUNNING",
        "reused": "KILLED",
        "unrecorded": "RUNNING",
    }
    assert tracking.process_start(2**22 + 1) is None  # above Linux's largest pid: no process
