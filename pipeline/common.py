"""Shared plumbing of the stage entry points: argument parsing, logging, user-facing errors."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.artifacts import committed, reset_committed
from pipeline.config import Params, ParamsError, load_params, yaml_value

log = logging.getLogger("hashaudit")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads, and its finished child
    processes (the forked shadow-head trainers of the membership attack)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: hashaudit's own error classes (params, data, files,
    backbone, hashing, retrieval, privacy) and missing or unreadable files. Reported as one clear
    line with exit code 2. Every other exception is a bug and keeps its traceback (exit code 1)."""
    from hashers.errors import HashingError
    from pipeline.artifacts import ArtifactError
    from pipeline.backbones import BackboneUnavailableError  # dvc-deps: not an output dependency
    from pipeline.data import DataError  # dvc-deps: not an output dependency
    from privacy.errors import PrivacyError
    from retrieval.errors import RetrievalError

    return (
        ParamsError,
        ArtifactError,
        DataError,
        BackboneUnavailableError,
        HashingError,
        RetrievalError,
        PrivacyError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    )


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level``, else ``$HASHAUDIT_LOG``, else INFO; a level name logging does
    not know is a :class:`ParamsError` (raised once logging is set up at INFO, to report it)."""
    raw = level or os.environ.get("HASHAUDIT_LOG") or "INFO"  # set but empty: the default
    name = raw.upper()
    known = isinstance(logging.getLevelName(name), int)
    logging.basicConfig(
        level=name if known else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if name != "DEBUG":  # faiss logs each missing CPU-specific build at INFO: read as failures
        logging.getLogger("faiss").setLevel(logging.WARNING)
    if not known:
        what = f"log level {raw!r}" if level else f"HASHAUDIT_LOG={raw!r}"
        raise ParamsError(
            f"{what}: not a log level; use DEBUG, INFO, WARNING or ERROR (or unset HASHAUDIT_LOG)"
        )


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set train.epochs=5 (YAML value syntax); repeatable",
    )
    return parser


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as ``{key: value}`` in the order they apply: a key given again
    moves to its last position (a dict kept its first one, so in ``--set x.size=128 --set
    'x={kind: medmnist}' --set x.size=64`` the mapping, applied last, dropped ``size=64``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        key = key.strip()
        parsed = yaml_value(value, where=f"--set {item!r}: the value", key=key)
        out.pop(key, None)
        out[key] = parsed
    return out


def stage_argv(*args: object, **flags: object) -> list[str]:
    """A stage's command line: ``args`` as given, then ``--flag value`` per keyword
    (``float_metrics=p`` -> ``--float-metrics p``); for tests and benchmarks that call ``main``."""
    out = [str(a) for a in args]
    for name, value in flags.items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def load(args: argparse.Namespace) -> Params:
    return load_params(args.params, parse_overrides(args.overrides))


class StageTerminated(KeyboardInterrupt):
    """Raised in the stage process on SIGTERM, so the stage unwinds as on Ctrl-C: no output is
    left half-written, the MLflow run is marked KILLED, and the exit code is 143 (128 + 15)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise StageTerminated(f"signal {signum}")


def die_with_parent() -> bool:
    """On Linux, ask the kernel to send this process SIGTERM when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so a stage whose ``dvc`` was killed with ``kill -9`` stops
    instead of running on as an orphan. Returns whether it was set.

    On by default only under DVC (``$DVC_STAGE`` is set: dvc sets it for every stage command), so
    that ``nohup python -m pipeline.train ... &`` still outlives its shell;
    ``HASHAUDIT_DIE_WITH_PARENT=1`` / ``0`` forces it on / off (empty: the default; any other
    value is a :class:`ParamsError`). It helps when dvc starts the
    stage directly: dvc runs ``$SHELL -c CMD``, and bash and zsh exec a single command, while
    dash stays in between (then the stage outlives a killed dvc; see bench/README.md, "Bad inputs")."""
    default = "1" if "DVC_STAGE" in os.environ else "0"
    wanted = os.environ.get("HASHAUDIT_DIE_WITH_PARENT") or default  # set but empty: the default
    if wanted not in ("0", "1"):  # 'yes' or 'true' read as off: under dvc, the opposite of asked
        raise ParamsError(
            f"HASHAUDIT_DIE_WITH_PARENT={wanted!r}: use 1 (stop when the parent process dies) or "
            "0 (run on), or unset it (on under dvc only)"
        )
    if not sys.platform.startswith("linux") or wanted != "1":
        return False
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() != parent:  # the parent died before prctl: nobody will signal us
        raise StageTerminated("the parent process is gone")
    return ok


def _what_landed() -> str:
    """What an interrupted stage leaves behind: nothing, or the complete outputs it had already
    written (each :func:`pipeline.artifacts.atomic_outputs` block lands whole or not at all)."""
    files = committed()
    if not files:
        return "no output of this stage was written"
    return (
        f"its outputs had already been written ({len(files)} file(s), last {files[-1]}); they "
        "are complete, but dvc did not record the stage, so the next dvc repro runs it again"
    )


def run_main(body: Callable[[list[str] | None], None], argv: list[str] | None) -> int:
    """Run a stage body; user errors become one logged line and exit code 2 (no traceback), a
    Ctrl-C a short message and exit code 130, SIGTERM exit code 143; any other exception
    propagates (a bug: traceback, exit code 1).

    ``argv=None`` means a real command-line run (``python -m pipeline.<stage>``): only then are the
    SIGTERM handler and :func:`die_with_parent` installed (tests call ``main([...])`` in-process).
    """
    reset_committed()
    previous = None
    try:
        setup_logging()
        if argv is None and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
            die_with_parent()
        body(argv)
    except user_errors() as err:
        log.error("%s", err)
        return 2
    except StageTerminated:
        log.error("terminated (SIGTERM); %s", _what_landed())
        return 128 + int(signal.SIGTERM)
    except KeyboardInterrupt:
        log.error("interrupted; %s", _what_landed())
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
