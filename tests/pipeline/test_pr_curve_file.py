"""The float baseline's PR curve read back by the evaluate stage (``--float-pr``,
pipeline.retrieval_metrics.read_pr_curve): a file that is not that CSV is one ArtifactError naming
the file and the fix (exit 2), never a UnicodeDecodeError / ValueError traceback (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.artifacts import ArtifactError
from pipeline.common import user_errors
from pipeline.retrieval_metrics import read_pr_curve, write_pr_curve

ROWS = [
    {"cutoff": 1, "recall": 0.125, "precision": 1.0},
    {"cutoff": 8, "recall": 1.0, "precision": 0.5},
]


def test_the_png_beside_the_csv_is_refused_naming_the_csv(tmp_path: Path) -> None:
    """write_pr_curve writes ``float.csv`` and ``float.png``; ``--float-pr .../float.png`` was a
    UnicodeDecodeError traceback ('utf-8' codec can't decode byte 0x89), exit 1."""
    write_pr_curve(tmp_path / "float.csv", {"float": ROWS}, title="t")
    assert read_pr_curve(tmp_path / "float.csv") == ROWS  # the CSV itself reads back exactly
    png = tmp_path / "float.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ArtifactError, match=r"float\.png: not a PR curve CSV .*not the \.png"):
        read_pr_curve(png)
    assert issubclass(ArtifactError, user_errors())  # one line, exit 2


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("cutoff,recall,precision\n1,0.1,1.0\n2,0.2,\n", r"data row 2 \(cutoff='2', recall='0\.2', precision=''\)"),
        ("cutoff,recall,precision\n1.5,0.1,0.2\n", r"data row 1 \(cutoff='1\.5'"),
        ("cutoff,recall,precision\n1,0.1\n", r"data row 1 \(cutoff='1', recall='0\.1', precision=None\)"),
    ],
)  # fmt: skip
def test_a_value_that_is_not_a_number_names_the_row(tmp_path: Path, body: str, shown: str) -> None:
    """An empty, missing or fractional value was a raw ValueError / TypeError (exit 1)."""
    path = tmp_path / "float.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ArtifactError, match=rf"float\.csv: {shown}.*re-run the knn stage"):
        read_pr_curve(path)
