"""Stage ``curves`` on inputs that are not what it draws: another stage's metrics, and a retention
interval that does not hold its point."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from pipeline import curves
from tests.conftest import REPO

FP = {"embeddings_fingerprint": "sha256:" + "a" * 64}  # what knn, train and evaluate record
SETS = ("train.methods=[dpsh]", "train.bits=[12, 24]")


def _argv(tmp: Path, ev: Path, flt: Path) -> list[str]:
    argv = ["--params", str(REPO / "params.yaml")]
    for s in SETS:
        argv += ["--set", s]
    argv += ["--dataset", "syn", "--evaluate-dir", str(ev), "--float-metrics", str(flt)]
    return [*argv, "--csv", str(tmp / "c.csv"), "--out", str(tmp / "png")]


def _study(tmp: Path, heads: dict[str, dict]) -> tuple[Path, Path]:
    ev = tmp / "ev"
    ev.mkdir()
    for stem, numbers in heads.items():
        (ev / f"{stem}.json").write_text(json.dumps({**numbers, **FP}))
    flt = tmp / "knn.json"
    flt.write_text(json.dumps({"balanced_accuracy": 0.8, "map_all": 0.6, **FP}))
    return ev, flt


def test_the_train_stages_metrics_are_refused_not_plotted_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``--evaluate-dir metrics/train/<ds>``: the train stage's files have the same names
    (``<method>-<bits>.json``) and the same embeddings fingerprint, but no score. Curves wrote a
    CSV of ``method,bits`` only and two empty plots, exit 0."""
    train = {"loss": 0.31, "epochs": 10.0}
    ev, flt = _study(tmp_path, {"dpsh-12": train, "dpsh-24": train})
    with caplog.at_level(logging.ERROR):
        assert curves.main(_argv(tmp_path, ev, flt)) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"{ev / 'dpsh-12.json'}: no balanced_accuracy" in error
    assert "--evaluate-dir metrics/evaluate/<dataset>" in error
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "png").exists()


def test_an_interval_that_misses_its_point_is_drawn_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``knn.ci_level: 0.1`` (accepted: any level in (0, 1)): the percentile interval of the
    resampled ratios need not hold the point ratio. These numbers are
    ``bootstrap_retentions`` output at level 0.1 (119 queries, 2 classes): point 0.63948, interval
    [0.63955, 0.65819]. matplotlib refused the negative lower bar (ValueError traceback, exit 1,
    no plot); the bar now spans the interval and the point."""
    from matplotlib.axes import Axes

    drawn: list[list[list[float]]] = []
    real = Axes.errorbar

    def record(self, x, y, *args, **kwargs):
        drawn.append([list(e) for e in kwargs["yerr"]])
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", record)
    point, low, high = 0.6394801702890432, 0.6395507655076349, 0.65819098663366
    missed = {
        "balanced_accuracy": 0.8 * point,
        curves.RETENTION: point,
        f"{curves.RETENTION}_low": low,
        f"{curves.RETENTION}_high": high,
    }
    held = {
        "balanced_accuracy": 0.72,
        curves.RETENTION: 0.9,
        f"{curves.RETENTION}_low": 0.85,
        f"{curves.RETENTION}_high": 0.95,
    }
    ev, flt = _study(tmp_path, {"dpsh-12": missed, "dpsh-24": held})
    assert curves.main(_argv(tmp_path, ev, flt)) == 0
    (yerr,) = drawn  # one method with intervals, the retention plot only
    assert yerr[0] == pytest.approx([0.0, 0.05])  # below: the point is under the interval
    assert yerr[1] == pytest.approx([high - point, 0.05])
    assert (tmp_path / "png/retention_vs_bits.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [float(r[f"{curves.RETENTION}_low"]) for r in rows] == [low, 0.85]  # the CSV: as is


def test_the_bits_axis_ticks_the_code_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one length gave ticks 11.4 … 12.6; the long retention title was cut at the figure's edge
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.curves import curve_png

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [{"method": "dpsh", "bits": 12, "balanced_accuracy": 0.7}]
    curve_png(tmp_path / "c.png", rows, "balanced_accuracy", 0.75, "t")
    (fig,) = figures
    assert fig.axes[0].get_xticks().tolist() == [12]
    rows += [{"method": "dpsh", "bits": 48, "balanced_accuracy": 0.72}]
    curve_png(tmp_path / "c.png", rows, "balanced_accuracy", 0.75, "t")
    assert figures[1].axes[0].get_xticks().tolist() == [12, 48]
