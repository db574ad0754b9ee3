"""Shared plumbing of the stage entry points: argument parsing, logging, user-facing errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from pipeline.config import Params, ParamsError, load_params

log = logging.getLogger("hashaudit")

#: Errors caused by the user's input (params, files, data): reported as one clear line, exit code 2.
#: Every hashaudit error class derives from ValueError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


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
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load(args: argparse.Namespace) -> Params:
    return load_params(args.params, parse_overrides(args.overrides))


def run_main(body: Callable[[list[str] | None], None], argv: list[str] | None) -> int:
    """Run a stage body; user errors become one logged line and exit code 2 (no traceback)."""
    setup_logging()
    try:
        body(argv)
    except USER_ERRORS as err:
        log.error("%s", err)
        return 2
    return 0


def exit_with(code: int) -> None:
    sys.exit(code)
