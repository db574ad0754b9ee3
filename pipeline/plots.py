"""Small aggregate plots (never images of patients): written atomically as PNG."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_path


def tick_labels(class_names: Sequence[str], n: int, *, width: int = 18) -> list[str]:
    """One distinct axis label per class: the class name, one longer than ``width`` shortened to
    its head and tail around an ellipsis (``adenocar…, grade 1``); names still alike (or equal)
    get their class id in front (``0: …``). Class ids where ``class_names`` does not name all
    ``n`` classes. A plain cut to ``width`` characters gave ``adenocarcinoma, grade 1`` and
    ``…, grade 2`` one label, so the plot could not tell their rows apart."""
    if len(class_names) != n:
        return [str(i) for i in range(n)]
    head = (width - 1) // 2
    tail = width - 1 - head
    short = [
        name if len(name) <= width else f"{name[:head]}…{name[-tail:]}"
        for name in (str(c) for c in class_names)
    ]
    seen = Counter(short)
    return [f"{i}: {s}" if seen[s] > 1 else s for i, s in enumerate(short)]


def confusion_png(
    path: str | Path,
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
    max_labelled: int = 50,
) -> None:
    """Row-normalised confusion matrix heat map, with counts and class names up to
    ``max_labelled`` classes. Beyond that, the heat map alone (class ids on the axes) at a capped
    size: n^2 count labels at 0.6 inch a class made a 1000-class plot take minutes and a 600-inch
    figure; the counts stay in the confusion JSON written beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = matrix.shape[0]
    labelled = n <= max_labelled
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    frac = matrix / rows
    size = max(4.0, 0.6 * min(n, max_labelled) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        _draw(ax, matrix, frac, class_names, labelled=labelled, title=title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:  # a failed write does not leave the figure in pyplot's registry
        plt.close(fig)


def _draw(
    ax: Any,
    matrix: np.ndarray,
    frac: np.ndarray,
    class_names: Sequence[str],
    *,
    labelled: bool,
    title: str,
) -> None:
    n = matrix.shape[0]
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if labelled:
        labels = tick_labels(class_names, n)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted" if labelled else "predicted (class id)")
    ax.set_ylabel("true" if labelled else "true (class id)")
    ax.set_title(title, fontsize=10)
    for i in range(n if labelled else 0):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.5 else "black",
            )
