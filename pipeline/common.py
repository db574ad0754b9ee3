"""Shared plumbing of the stage entry points: argument parsing, logging, user-facing errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import Params, ParamsError, load_params, yaml_value

log = logging.getLogger("hashaudit")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: hashaudit's own error classes (params, data, files,
    backbone, hashing, retrieval, privacy) and missing or unreadable files. Reported as one clear
    line with exit code 2. Every other exception is a bug and keeps its traceback (exit code 1)."""
    from hashers.base import HashingError
    from pipeline.artifacts import ArtifactError
    from pipeline.backbones import BackboneUnavailableError
    from pipeline.data import DataError
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
    logging.basicConfig(
        level=(level or os.environ.get("HASHAUDIT_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
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
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        out[key.strip()] = yaml_value(value, where=f"--set {item!r}: the value")
    return out


def load(args: argparse.Namespace) -> Params:
    return load_params(args.params, parse_overrides(args.overrides))


def run_main(body: Callable[[list[str] | None], None], argv: list[str] | None) -> int:
    """Run a stage body; user errors become one logged line and exit code 2 (no traceback), a
    Ctrl-C a short message and exit code 130; any other exception propagates (a bug: traceback)."""
    setup_logging()
    try:
        body(argv)
    except user_errors() as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; no output of this stage was written")
        return 130
    return 0


def exit_with(code: int) -> None:
    sys.exit(code)
