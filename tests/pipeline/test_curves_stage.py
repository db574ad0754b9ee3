"""Stage ``curves``: exactly the heads the params ask for, all outputs or none."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from pipeline import curves
from tests.conftest import REPO

FP = {"embeddings_fingerprint": "sha256:" + "a" * 64}  # what knn and evaluate record


def _study(tmp: Path, heads: dict[str, float]) -> tuple[Path, Path]:
    """Evaluate metrics ``<method>-<bits>.json`` with the given balanced accuracies, and a float
    baseline."""
    ev = tmp / "ev"
    ev.mkdir()
    for stem, bal in heads.items():
        (ev / f"{stem}.json").write_text(
            json.dumps({"balanced_accuracy": bal, "map_all": 0.5, **FP})
        )
    flt = tmp / "knn.json"
    flt.write_text(json.dumps({"balanced_accuracy": 0.8, "map_all": 0.6, **FP}))
    return ev, flt


def _argv(tmp: Path, ev: Path, flt: Path, *sets: str, out: Path | None = None) -> list[str]:
    argv = ["--params", str(REPO / "params.yaml")]
    for s in sets:
        argv += ["--set", s]
    argv += ["--dataset", "syn", "--evaluate-dir", str(ev), "--float-metrics", str(flt)]
    return [*argv, "--csv", str(tmp / "c.csv"), "--out", str(out or tmp / "png")]


def test_a_head_dropped_from_the_params_leaves_the_plot(tmp_path: Path) -> None:
    """A metrics file left from an earlier run (dpsh-24, csq-12) is not plotted."""
    ev, flt = _study(tmp_path, {"dpsh-12": 0.7, "dpsh-24": 0.6, "dpsh-48": 0.75, "csq-12": 0.1})
    sets = ("train.methods=[dpsh]", "train.bits=[48, 12]")
    assert curves.main(_argv(tmp_path, ev, flt, *sets)) == 0
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [(r["method"], r["bits"], r["balanced_accuracy"]) for r in rows] == [
        ("dpsh", "12", "0.7"),
        ("dpsh", "48", "0.75"),
    ]
    assert (tmp_path / "png" / "balanced_accuracy_vs_bits.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_head_is_named_and_nothing_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ev, flt = _study(tmp_path, {"dpsh-12": 0.7})
    caplog.set_level(logging.ERROR)
    assert (
        curves.main(_argv(tmp_path, ev, flt, "train.methods=[dpsh, csq]", "train.bits=[12]")) == 2
    )
    assert "no evaluate metrics for csq-12.json" in caplog.text
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "png").exists()


def test_an_unwritable_png_folder_is_refused_before_the_csv_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ev, flt = _study(tmp_path, {"dpsh-12": 0.7})
    blocker = tmp_path / "png"
    blocker.write_text("a file where the PNG folder goes")
    sets = ("train.methods=[dpsh]", "train.bits=[12]")
    assert curves.main(_argv(tmp_path, ev, flt, *sets, out=blocker)) == 2
    assert str(blocker) in caplog.text
    assert not (tmp_path / "c.csv").exists() and blocker.read_text().startswith("a file")


def test_a_rerun_without_retention_numbers_removes_the_old_retention_plot(tmp_path: Path) -> None:
    """Run by hand into the same folder (DVC clears declared outputs itself): heads evaluated
    without the float predictions carry no retention, and the previous run's
    ``retention_vs_bits.png`` stayed beside the new plots."""
    ev, flt = _study(tmp_path, {"dpsh-12": 0.7})
    with_retention = {"balanced_accuracy": 0.7, "map_all": 0.5, curves.RETENTION: 0.875, **FP}
    (ev / "dpsh-12.json").write_text(json.dumps(with_retention))
    sets = ("train.methods=[dpsh]", "train.bits=[12]")
    assert curves.main(_argv(tmp_path, ev, flt, *sets)) == 0
    png = tmp_path / "png"
    assert (png / "retention_vs_bits.png").exists()
    (ev / "dpsh-12.json").write_text(json.dumps({"balanced_accuracy": 0.7, "map_all": 0.5, **FP}))
    assert curves.main(_argv(tmp_path, ev, flt, *sets)) == 0
    assert sorted(p.name for p in png.glob("*.png")) == [
        "balanced_accuracy_vs_bits.png",
        "map_all_vs_bits.png",
    ]


def test_a_head_evaluated_on_other_embeddings_is_refused(tmp_path: Path, caplog) -> None:
    """One plot, one data set: an evaluate file left from other embeddings (its fingerprint
    differs from the float baseline's) is named, and nothing is written."""
    ev, flt = _study(tmp_path, {"dpsh-12": 0.7, "dpsh-24": 0.6})
    other = {"balanced_accuracy": 0.9, "embeddings_fingerprint": "sha256:" + "b" * 64}
    (ev / "dpsh-24.json").write_text(json.dumps(other))
    sets = ("train.methods=[dpsh]", "train.bits=[12, 24]")
    assert curves.main(_argv(tmp_path, ev, flt, *sets)) == 2
    assert f"{ev / 'dpsh-24.json'} was made from other embeddings than the float baseline" in (
        caplog.text
    )
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "png").exists()


def test_error_bars_on_every_point_that_has_an_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """csq-12 carries no interval, csq-24 and csq-48 do: bars at 24 and 48 bits (one point
    without an interval took the bars off the whole line); dpsh has them everywhere."""
    from matplotlib.axes import Axes

    drawn: list[tuple[str, list, list, list]] = []
    real = Axes.errorbar

    def record(self, x, y, *args, **kwargs):
        drawn.append((kwargs.get("fmt"), list(x), list(y), [list(e) for e in kwargs["yerr"]]))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", record)
    pts = {"csq-12": (0.6, None), "csq-24": (0.62, (0.5, 0.7)), "csq-48": (0.65, (0.55, 0.8))}
    pts |= {f"dpsh-{b}": (0.7, (0.6, 0.75)) for b in (12, 24, 48)}
    ev, flt = _study(tmp_path, {stem: 0.8 * ret for stem, (ret, _) in pts.items()})
    for stem, (ret, interval) in pts.items():
        rec = json.loads((ev / f"{stem}.json").read_text())
        rec["retention_balanced_accuracy"] = ret
        if interval is not None:
            rec["retention_balanced_accuracy_low"], rec["retention_balanced_accuracy_high"] = (
                interval
            )
        (ev / f"{stem}.json").write_text(json.dumps(rec))
    sets = ("train.methods=[csq,dpsh]", "train.bits=[12,24,48]")
    assert curves.main(_argv(tmp_path, ev, flt, *sets)) == 0
    # only the retention plot has intervals: one errorbar call per method, its points only
    rounded = [(f, x, y, [[round(v, 6) for v in e] for e in err]) for f, x, y, err in drawn]
    assert rounded == [
        ("none", [24, 48], [0.62, 0.65], [[0.12, 0.1], [0.08, 0.15]]),
        ("none", [12, 24, 48], [0.7, 0.7, 0.7], [[0.1, 0.1, 0.1], [0.05, 0.05, 0.05]]),
    ]


def test_heads_evaluated_against_another_float_knn_run_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """knn re-run at another knn.k after evaluate (by hand; DVC would re-run evaluate): the
    head's points and retention divide by the k=7 float KNN, the float line would be k=5's. The
    report refuses that pairing; curves plotted it."""
    from pipeline import evaluate, knn, train
    from pipeline.artifacts import save_embeddings
    from pipeline.synthetic import synthetic_embeddings
    from tests.stage_cli import FAST, IDENT, eval_argv, knn_argv, train_argv

    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    assert knn.main(knn_argv(FAST, emb, tmp_path)) == 0
    assert train.main(train_argv(FAST, emb, tmp_path)) == 0
    assert evaluate.main(eval_argv(FAST, emb, tmp_path, *IDENT)) == 0
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "dpsh-12.json").write_text((tmp_path / "eval.json").read_text())
    assert json.loads((ev / "dpsh-12.json").read_text())["k"] == 7
    assert knn.main(knn_argv(FAST, emb, tmp_path, "--set", "knn.k=5")) == 0  # the float line now
    sets = ("train.methods=[dpsh]", "train.bits=[12]")
    assert curves.main(_argv(tmp_path, ev, tmp_path / "knn.json", *sets)) == 2
    assert f"{ev / 'dpsh-12.json'}: k = 7, but the float KNN" in caplog.text
    assert "records k = 5" in caplog.text
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "png").exists()
