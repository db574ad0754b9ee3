"""The confusion-matrix plot that stages log to MLflow: every class keeps a label of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.plots import confusion_png


def _tick_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> list[str]:
    """The x and y tick labels confusion_png drew (the figure caught as it is closed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caught: list[Any] = []
    close = plt.close

    def catch(fig: Any = None) -> None:
        caught.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", catch)
    n = len(names)
    matrix = np.arange(n * n).reshape(n, n)
    confusion_png(tmp_path / "c.png", matrix, names, title="t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = caught[0].axes
    xs = [t.get_text() for t in ax.get_xticklabels()]
    ys = [t.get_text() for t in ax.get_yticklabels()]
    assert xs == ys
    return xs


def test_long_class_names_that_share_a_start_keep_distinct_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut to 18 characters gave "adenocarcinoma, grade 1" and "…, grade 2" the one label
    "adenocarcinoma, gr": the plot's rows and columns of the two could not be told apart."""
    names = ["adenocarcinoma, grade 1", "adenocarcinoma, grade 2", "normal tissue"]
    assert _tick_labels(tmp_path, monkeypatch, names) == [
        "adenocar…, grade 1",  # 8 first + … + 9 last characters: 18
        "adenocar…, grade 2",
        "normal tissue",  # 18 characters or fewer: as named
    ]


def test_names_still_alike_get_their_class_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["other", "lesion, left side, upper lobe", "lesion, right side, upper lobe", "other"]
    assert _tick_labels(tmp_path, monkeypatch, names) == [
        "0: other",
        "1: lesion, …pper lobe",
        "2: lesion, …pper lobe",
        "3: other",
    ]


def test_a_failed_plot_write_closes_its_figure(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.artifacts import ArtifactError

    (tmp_path / "file").write_text("x")
    before = len(plt.get_fignums())
    with pytest.raises(ArtifactError):  # the parent of the output is a file
        confusion_png(tmp_path / "file" / "c.png", np.eye(2, dtype=int), ["a", "b"], title="t")
    assert len(plt.get_fignums()) == before  # was one more figure per failure, never closed
