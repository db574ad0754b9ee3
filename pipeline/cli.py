"""``hashaudit <stage> [args]``: run one pipeline stage by name (the same entry points DVC calls)."""

from __future__ import annotations

import importlib
import sys

STAGES = (
    "source_stamp",
    "extract",
    "knn",
    "train",
    "evaluate",
    "curves",
    "attack",
    "train_dp",
    "release",
    "release_curve",
    "report",
    "index",
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in STAGES:
        bad = f"unknown stage {args[0]!r}; " if args and args[0] not in ("-h", "--help") else ""
        sys.stderr.write(f"{bad}usage: hashaudit {{{','.join(STAGES)}}} [--help] [stage args]\n")
        return 0 if args and args[0] in ("-h", "--help") else 2
    stage = importlib.import_module(f"pipeline.{args[0]}")
    if argv is None:  # a real command line: the stage installs its signal handling (run_main)
        sys.argv = [f"hashaudit {args[0]}", *args[1:]]
        return stage.main(None)
    return stage.main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
