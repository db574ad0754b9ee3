"""Command lines of the stage mains for tests: one builder per stage, one file layout.

Every builder puts its outputs under ``out`` with fixed names (``knn.json``, ``head/``,
``eval.json``, ...), so a test reads them back without repeating the argument list.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.common import stage_argv as cli
from tests.conftest import REPO

#: --params plus the settings that keep stage tests fast and tracking-free
FAST = ["--params", str(REPO / "params.yaml"), "--set", "train.epochs=2"]
FAST += ["--set", "train.val_queries=60", "--set", "tracking.enabled=false"]


def knn_argv(base: list[str], emb: Path, out: Path, *extra: str, dataset: str = "syn") -> list[str]:
    files = {"metrics": out / "knn.json", "sweep": out / "knn.csv"}
    return cli(
        *base, *extra, dataset=dataset, embeddings=emb, confusion=out / "knn/confusion.png", **files
    )


def train_argv(
    base: list[str], emb: Path, out: Path, *extra: str, method: str = "dpsh", bits: int = 12
) -> list[str]:
    files = {"out": out / "head", "metrics": out / "train.json", "history": out / "train.csv"}
    return cli(*base, *extra, dataset="syn", method=method, bits=bits, embeddings=emb, **files)


def eval_argv(
    base: list[str], emb: Path, out: Path, *extra: str, head: Path | None = None,
    float_metrics: Path | None = None,
) -> list[str]:  # fmt: skip
    """evaluate's command line (identity flags, if any, go in ``extra``: evaluate reads them from
    the head); the head and the float metrics default to those the builders above write."""
    return cli(
        *base, *extra, embeddings=emb, head=head or out / "head",
        float_metrics=float_metrics or out / "knn.json", metrics=out / "eval.json",
        sweep=out / "eval.csv", confusion=out / "eval/confusion.png",
    )  # fmt: skip


#: the identity flags of the head the builders train by default
IDENT = ["--dataset", "syn", "--method", "dpsh", "--bits", "12"]
