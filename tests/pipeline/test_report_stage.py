"""The report stage on a hand-made metrics tree: rows, shares, headline, fronts, MLflow parent."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest

from pipeline import report, tracking
from pipeline.artifacts import write_json
from pipeline.config import TrackingConfig
from tests.conftest import REPO

GROUPS = ("train", "test")
CONTENT = "sha256:" + "a" * 64
PUBLIC = "sha256-public:" + "b" * 64  # train private: a DP head's, a database release's
REFERENCE = {  # what the knn stage records (pipeline.artifacts.fingerprint_record)
    "embeddings_fingerprint": CONTENT,
    "embeddings_public_fingerprint_train": PUBLIC,
    "embeddings_public_fingerprint_test": "sha256-public(test):" + "c" * 64,
    "embeddings_public_fingerprint_test_train": "sha256-public(test,train):" + "d" * 64,
}


def linkage(
    top1: float, *, float_value: float | None = 0.8, fingerprint: str = CONTENT
) -> dict[str, float]:
    out: dict = {"embeddings_fingerprint": fingerprint}
    for g in GROUPS:
        out[f"linkage/{g}/top1"] = top1
        out[f"linkage/{g}/top1_baseline"] = 0.01
        if float_value is not None:
            out[f"linkage/{g}/top1_float"] = float_value
    return out


def utility(bal: float, retention: float, *, fingerprint: str = CONTENT) -> dict[str, float]:
    return {
        **REFERENCE,
        "embeddings_fingerprint": fingerprint,
        "balanced_accuracy": bal,
        "retention_balanced_accuracy": retention,
        "accuracy": bal + 0.1,
        "macro_f1": bal,
        "map_all": 0.5,
    }


def make_tree(root: Path) -> None:
    """One study of dataset ``syn``: dpsh at 12 bits, one DP head (csq, ε 8), rr at ε_code 4
    (files named the way DVC may write ε: ``4.0``), the k-anonymous release."""
    m = root / "metrics"
    write_json(m / "knn/syn.json", utility(0.6, 1.0))
    write_json(m / "attack/syn/float.json", linkage(0.8, float_value=None))
    interval = {"retention_balanced_accuracy_low": 0.91, "retention_balanced_accuracy_high": 1.08}
    write_json(m / "evaluate/syn/dpsh-12.json", {**utility(0.6, 1.0), **interval})
    # share (0.405 - 0.01) / (0.8 - 0.01) = 0.5
    write_json(
        m / "attack/syn/dpsh-12.json",
        {**linkage(0.405), "membership/auc": 0.7, "membership/auc_baseline": 0.5},
    )
    guarantee = {"embeddings_fingerprint": PUBLIC}  # train_dp / release: the config.json digest
    write_json(
        m / "train_dp/syn/csq-12-eps8.json", {"dp_epsilon": 7.9, "dp_delta": 1e-4, **guarantee}
    )
    write_json(m / "evaluate_dp/syn/csq-12-eps8.json", utility(0.54, 0.9, fingerprint=PUBLIC))
    write_json(
        m / "attack_dp/syn/csq-12-eps8.json",
        {
            **linkage(0.405, fingerprint=PUBLIC),
            "membership/auc": 0.52,
            "membership/auc_baseline": 0.5,
        },
    )
    write_json(m / "release/syn/dpsh-12-rr4.0.json", {"epsilon_code": 4.0, **guarantee})
    write_json(m / "evaluate_rr/syn/dpsh-12-rr4.0.json", utility(0.594, 0.99, fingerprint=PUBLIC))
    write_json(m / "attack_rr/syn/dpsh-12-rr4.0.json", linkage(0.089, fingerprint=PUBLIC))
    write_json(m / "release/syn/dpsh-12-kanon.json", {"train/k": 20.0, **guarantee})
    write_json(m / "evaluate_kanon/syn/dpsh-12.json", utility(0.588, 0.98, fingerprint=PUBLIC))
    write_json(m / "attack_kanon/syn/dpsh-12.json", linkage(0.0, fingerprint=PUBLIC))  # share < 0


SETS = (
    "train.methods=[dpsh]",
    "train.bits=[12]",
    "dp.methods=[csq]",
    "dp.epsilons=[8]",
    "release.epsilons=[4]",
)


def argv(root: Path, *extra: str) -> list[str]:
    out = ["--params", str(REPO / "params.yaml")]
    for s in SETS + extra:
        out += ["--set", s]
    out += ["--dataset", "syn", "--metrics-dir", str(root / "metrics")]
    return [*out, "--out", str(root / "reports/syn"), "--metrics", str(root / "report.json")]


def test_report_rows_shares_headline_and_front(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    with open(tmp_path / "reports/syn/tradeoff.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["release"], r["method"], r["bits"], r["epsilon"]) for r in rows] == [
        ("float", "float", "", ""),
        ("codes", "dpsh", "12", ""),
        ("dp", "csq", "12", "8.0"),
        ("rr", "dpsh", "12", "4.0"),
        ("kanon", "dpsh", "12", ""),
    ]
    share = [r["linkage_test_share"] for r in rows]
    assert float(share[0]) == 1.0 and float(share[1]) == pytest.approx(0.5)
    assert float(share[2]) == pytest.approx(0.5)  # DP-SGD does not bound linkage
    assert float(share[3]) == pytest.approx(0.1)
    assert float(share[4]) == pytest.approx(-0.01 / 0.79)  # the CSV keeps the raw share
    assert float(rows[2]["dp_epsilon"]) == 7.9 and float(rows[4]["release_k"]) == 20.0
    assert float(rows[1]["membership"]) == 0.7 and rows[3]["membership"] == ""
    # the retention interval evaluate wrote; the float row retains all of itself; none for dp
    assert [rows[i]["retention_balanced_accuracy_low"] for i in (0, 1, 2)] == ["1.0", "0.91", ""]
    assert rows[1]["retention_balanced_accuracy_high"] == "1.08"

    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["releases"] == 5 and summary["releases/dp"] == 1
    assert summary["best_retention/rr"] == 0.99 and "best_retention/float" not in summary
    # retention >= 0.98: codes 0.5, rr 0.1, kanon floored to 0 -> kanon; float and dp excluded
    assert summary["least_leakage/linkage/test"] == 0.0
    # front (leakage floored, retention): kanon (0, 0.98), rr (0.1, 0.99), codes (0.5, 1.0);
    # the float point (1, 1) is beaten by the codes (same utility, less leakage)
    assert summary["pareto_size/linkage/test"] == 3
    # membership: codes (AUC 0.7, 1.0) and the DP head (0.52, 0.9) trade off
    assert summary["least_leakage/membership"] == 0.7 and summary["pareto_size/membership"] == 2
    assert not any("reconstruction" in k for k in summary)  # not measured: no headline

    md = (tmp_path / "reports/syn/report.md").read_text()
    # a negative share is shown as 0 (no measurable leakage); no membership on released codes
    assert "| k-anonymous | dpsh | 12 |  | 0.588 | 0.980 | 0.500 | 0.00 / 0.00 | – |" in md
    assert "| hash codes | dpsh | 12 |  | 0.600 | 1.000 (0.91–1.08) | 0.500 | 0.50 / 0.50 |" in md
    assert "| DP-SGD head | csq | 12 | 8 | 0.540 | 0.900 | 0.500 | 0.50 / 0.50 | 0.520 |" in md
    assert "| linkage | test | 0.000 (share) | dpsh-12 (kanon) |" in md
    assert "picked on the same test numbers the row reports" in md  # the selection caveat
    assert "| randomised response | dpsh | 12 | 4 | 0.594 | 0.990 | 0.500 | 0.10 / 0.10 | – |" in md
    assert "dpsh-12 (kanon) (0.00, 0.98), dpsh-12 ε=4 (rr) (0.10, 0.99), dpsh-12 (0.50, 1.00)" in md
    pngs = sorted(p.name for p in (tmp_path / "reports/syn").glob("*.png"))
    assert pngs == ["pareto-linkage.png", "pareto-membership.png"]  # only measured attacks


def test_a_degenerate_release_is_no_headline_and_near_chance_floats_are_flagged(
    tmp_path: Path,
) -> None:
    """The k-anonymous release of ``make_tree`` collapsed to fewer codes than classes: it leaks
    least (share floored to 0) only because it carries nothing, so it is on no front and not
    the least leakage; rr (share 0.1, retention 0.99) is. A float KNN barely above chance gets
    a warning; a clear one does not."""
    make_tree(tmp_path)
    m = tmp_path / "metrics"
    kanon = {**utility(0.588, 0.98), "degenerate_release": 1, "predicted_classes": 1}
    write_json(m / "evaluate_kanon/syn/dpsh-12.json", kanon)
    write_json(m / "knn/syn.json", {**utility(0.6, 1.0), "chance_balanced_accuracy": 0.25})
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["least_leakage/linkage/test"] == pytest.approx(0.1)
    assert summary["pareto_size/linkage/test"] == 2  # rr (0.1, 0.99), codes (0.5, 1.0)
    assert summary["releases_degenerate"] == 1 and summary["float_near_chance"] == 0
    assert "best_retention/kanon" not in summary  # its only release is degenerate
    md = (tmp_path / "reports/syn").joinpath("report.md").read_text()
    assert "| k-anonymous | dpsh | 12 |  | 0.588 | 0.980 ‡ |" in md
    assert "| linkage | test | 0.100 (share) | dpsh-12 ε=4 (rr) |" in md
    assert "balanced accuracy 0.600 (chance: 0.250)" in md and "near chance" not in md
    # (0.3 - 0.25) < 0.1 * (1 - 0.25): the features barely separate the classes
    write_json(m / "knn/syn.json", {**utility(0.3, 1.0), "chance_balanced_accuracy": 0.25})
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    md = (tmp_path / "reports/syn").joinpath("report.md").read_text()
    assert md.splitlines()[2].startswith("> **Warning:** the float KNN's balanced accuracy 0.300")
    assert json.loads((tmp_path / "report.json").read_text())["float_near_chance"] == 1


@pytest.mark.parametrize(
    ("path", "key", "recorded"),
    [  # a plain head's attack numbers and a DP head's utility, each from other embeddings
        ("attack/syn/dpsh-12.json", "embeddings_fingerprint", "sha256:" + "e" * 64),
        ("evaluate_dp/syn/csq-12-eps8.json", "embeddings_public_fingerprint_train", None),
        # the guarantee of a row (ε, δ of a DP head; k of a release) from another study's run
        ("train_dp/syn/csq-12-eps8.json", "embeddings_public_fingerprint_train", None),
        ("release/syn/dpsh-12-kanon.json", "embeddings_public_fingerprint_train", None),
    ],
)
def test_numbers_of_other_embeddings_are_refused(
    tmp_path: Path, caplog, path: str, key: str, recorded: str | None
) -> None:
    """Every row's utility and attack files must come from the float baseline's embeddings: the
    content fingerprint for a plain head, the public one of the same private splits for a DP
    head or a release (their files carry no digest of the private records)."""
    make_tree(tmp_path)
    target = tmp_path / "metrics" / path
    numbers = json.loads(target.read_text())
    numbers["embeddings_fingerprint"] = recorded or "sha256-public:" + "f" * 64
    write_json(target, numbers)
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 2
    assert f"{target} was made from other embeddings than the float baseline" in caplog.text
    assert f"({key} " in caplog.text
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "reports").exists()


def test_report_missing_file_names_the_stage_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_tree(tmp_path)
    (tmp_path / "metrics/attack_rr/syn/dpsh-12-rr4.0.json").unlink()
    with caplog.at_level(logging.ERROR):
        assert report.main(argv(tmp_path, "tracking.enabled=false")) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "attack_rr" in errors[0] and "ε_code = 4" in errors[0]
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "reports").exists()


def test_two_files_of_one_epsilon_are_refused_not_picked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """params.yaml once said ``dp.epsilons: [8.0]`` and now ``[8]``: DVC wrote ``eps8.json`` and
    never removed the old stage's ``eps8.0.json``. The report took whichever the glob listed last
    (here the stale 0.30 balanced accuracy over the current 0.54); it now names both files."""
    make_tree(tmp_path)
    stale = tmp_path / "metrics/evaluate_dp/syn/csq-12-eps8.0.json"
    write_json(stale, utility(0.30, 0.5))
    with caplog.at_level(logging.ERROR):
        assert report.main(argv(tmp_path, "tracking.enabled=false")) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert str(stale) in error and "csq-12-eps8.json" in error and "DP ε = 8" in error
    assert "delete the stale file" in error
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "reports").exists()
    stale.unlink()
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    with open(tmp_path / "reports/syn/tradeoff.csv", newline="") as fh:
        dp_row = next(r for r in csv.DictReader(fh) if r["release"] == "dp")
    assert float(dp_row["balanced_accuracy"]) == 0.54


def test_a_rerun_removes_the_plot_of_an_attack_no_longer_measured(tmp_path: Path) -> None:
    """Run by hand into the same folder (DVC clears declared outputs itself), the second run
    left ``pareto-membership.png`` beside a report that no longer measures membership."""
    make_tree(tmp_path)
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    out = tmp_path / "reports/syn"
    assert sorted(p.name for p in out.glob("*.png")) == [
        "pareto-linkage.png",
        "pareto-membership.png",
    ]
    for path in (tmp_path / "metrics").glob("attack*/syn/*.json"):
        numbers = json.loads(path.read_text())
        write_json(path, {k: v for k, v in numbers.items() if not k.startswith("membership")})
    (out / "notes.png").write_bytes(b"a file of the user's")  # not a report plot: kept
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["notes.png", "pareto-linkage.png"]


def test_report_is_the_parent_run_of_the_runs_that_wrote_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    make_tree(tmp_path)
    m = tmp_path / "metrics"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(uri=uri)

    def stage(
        name: str, path: Path | None, numbers: dict, dataset: str = "syn", fail: bool = False
    ) -> str:
        """A stage run that writes ``numbers`` to ``path`` with record_metrics (None: an older
        hashaudit's run, which wrote no tag)."""
        try:
            with tracking.stage_run(cfg, name=name, tags={"dataset": dataset}) as run:
                if path is not None:
                    tracking.record_metrics(path, numbers, run)
                if fail:
                    raise RuntimeError("stage failed")
                return run.run_id
        except RuntimeError:
            return run.run_id

    train = m / "train/syn/dpsh-12.json"
    old = stage("train@syn-dpsh-12", train, {"loss": 2.0})
    new = stage("train@syn-dpsh-12", train, {"loss": 1.0})  # the rerun wrote the current file
    dp_numbers = json.loads((m / "evaluate_dp/syn/csq-12-eps8.json").read_text())
    dp = stage("evaluate_dp@syn-csq-12-eps8", m / "evaluate_dp/syn/csq-12-eps8.json", dp_numbers)
    # started after the runs that wrote the reported files, same names, other numbers:
    hand = stage("train@syn-dpsh-12", tmp_path / "elsewhere.json", {"loss": 0.5})
    untagged = stage("evaluate_dp@syn-csq-12-eps8", None, {})
    failed = stage("evaluate@syn-dpsh-12", tmp_path / "failed.json", {"x": 1}, fail=True)
    other = stage("train@other-dpsh-12", tmp_path / "other.json", {"loss": 1.0}, dataset="other")
    assert report.main(argv(tmp_path, f"tracking.uri={uri}")) == 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hashaudit")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "report@syn")
    assert parent.data.metrics["releases"] == 5.0
    assert parent.data.tags["dataset"] == "syn" and parent.data.tags["stage"] == "report"
    children = {
        r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert children == {new, dp}
    assert not {old, hand, untagged, failed, other} & children
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "pareto"} <= artifacts


def test_membership_auc_below_chance_is_no_less_leakage_than_chance() -> None:
    """The reviewer's case from the BreastMNIST study: DP heads at AUC 0.459 and 0.466 (noise under
    chance) sat on the front and were the 'least leakage', though a head at 0.494 with more
    utility dominates both once every AUC is floored at its 0.5 baseline, as shares are at 0."""
    rows = [
        {"membership": auc, "membership_baseline": 0.5, "retention_balanced_accuracy": ret}
        for auc, ret in ((0.459, 1.023), (0.466, 1.025), (0.494, 1.054), (0.60, 1.10))
    ]
    assert report.leakage_values(rows, "membership").tolist() == [0.5, 0.5, 0.5, 0.60]
    rows.append({"membership": 0.45, "retention_balanced_accuracy": 1.0})  # no baseline: as is
    assert report.leakage_values(rows, "membership")[-1] == 0.45
    unmeasured = {  # every other attack: not measured in these rows
        report.leakage_axis(n, g)[0]: math.nan for n in report.LEAKAGE_NUMBERS for g in n.groups
    }
    full = [{**unmeasured, **r} for r in rows[:4]]
    (t,) = report.tradeoffs(full, 1.0)  # only membership is measured
    assert t.front.tolist() == [2, 3] and t.least == 0.5 and t.least_at == 2


def test_an_attack_measured_only_on_the_train_victims_keeps_its_column(tmp_path: Path) -> None:
    """The float linkage does not beat its baseline on the test queries (every test share
    undefined) but does on the train victims: the column stays, test cells read "–" (it was
    dropped whole, while the least-leakage table still listed linkage/train)."""
    make_tree(tmp_path)
    m = tmp_path / "metrics"
    fl = json.loads((m / "attack/syn/float.json").read_text())
    fl["linkage/test/top1"] = 0.005  # under the 0.01 baseline
    write_json(m / "attack/syn/float.json", fl)
    for path in m.glob("attack*/syn/*.json"):
        numbers = json.loads(path.read_text())
        if "linkage/test/top1_float" in numbers:
            write_json(path, {**numbers, "linkage/test/top1_float": 0.005})
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    md = (tmp_path / "reports/syn/report.md").read_text()
    assert "| release | method | bits | ε | bal. acc | retention | mAP@all | linkage |" in md
    assert "| hash codes | dpsh | 12 |  | 0.600 | 1.000 (0.91–1.08) | 0.500 | 0.50 / – |" in md


def test_an_attack_the_float_control_does_not_beat_is_named_not_dropped_silently(
    tmp_path: Path,
) -> None:
    """Linkage on the float embeddings at its baseline (0.01 = 0.01): no share is defined for any
    row, so the column and front go; report.md says why instead of reading as "not measured"."""
    make_tree(tmp_path)
    m = tmp_path / "metrics"
    for path in m.glob("attack*/syn/*.json"):
        record = json.loads(path.read_text())
        for g in GROUPS:
            if f"linkage/{g}/top1_float" in record:
                record[f"linkage/{g}/top1_float"] = 0.01
        write_json(path, record)
    float_file = m / "attack/syn/float.json"
    write_json(
        float_file,
        {**json.loads(float_file.read_text()), **{f"linkage/{g}/top1": 0.01 for g in GROUPS}},
    )
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    md = (tmp_path / "reports/syn/report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| release |"))
    assert "linkage" not in header and "membership AUC" in header  # the column went, not the table
    assert (
        "**Not shown** (measured, no leakage share defined: the attack on the float embeddings did "
        "no better than its code-blind baseline, so 0 and 1 of the share coincide): linkage "
        "(train: float 0.010 vs baseline 0.010; test: float 0.010 vs baseline 0.010)."
    ) in md


def test_a_release_attacked_against_another_float_control_run_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """attack-float re-run by hand (other attack seed, same embeddings): float.json's linkage now
    reads 0.6, the heads' files still hold the 0.8 they were attacked beside. The report put the
    float row at share 1 (raw 0.6) next to a codes share of 0.5 = (0.405 - 0.01) / (0.8 - 0.01),
    which against the float row shown would be (0.405 - 0.01) / (0.6 - 0.01) = 0.669."""
    make_tree(tmp_path)
    float_file = tmp_path / "metrics/attack/syn/float.json"
    numbers = json.loads(float_file.read_text())
    write_json(float_file, {**numbers, **{f"linkage/{g}/top1": 0.6 for g in GROUPS}})
    with caplog.at_level(logging.ERROR):
        assert report.main(argv(tmp_path, "tracking.enabled=false")) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    head = tmp_path / "metrics/attack/syn/dpsh-12.json"
    assert f"{head}: its float control linkage/train/top1_float = 0.8" in error
    assert f"{float_file} now reads linkage/train/top1 = 0.6" in error and "dvc repro" in error
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "reports").exists()
    # the heads re-attacked beside the new float control: reported, shares against 0.6
    for path in (tmp_path / "metrics").glob("attack*/syn/*.json"):
        if path != float_file:
            again = {f"linkage/{g}/top1_float": 0.6 for g in GROUPS}
            write_json(path, {**json.loads(path.read_text()), **again})
    assert report.main(argv(tmp_path, "tracking.enabled=false")) == 0
    with open(tmp_path / "reports/syn/tradeoff.csv", newline="") as fh:
        codes = next(r for r in csv.DictReader(fh) if r["release"] == "codes")
    assert float(codes["linkage_test_share"]) == pytest.approx(0.395 / 0.59)


def test_retentions_of_another_float_knn_run_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """knn re-run at k = 7 (balanced accuracy 0.6) while the codes' evaluate file still divides by
    the float KNN at k = 3 (retention 1.2): the report headed the table "Float KNN (k = 5)" from
    params.yaml and put that retention beside the k = 7 float row, three k's in one table."""
    make_tree(tmp_path)
    m = tmp_path / "metrics"
    knn = m / "knn/syn.json"
    write_json(knn, {**utility(0.6, 1.0), "k": 7})
    evaluate = m / "evaluate/syn/dpsh-12.json"
    stale = {"k": 3, "float_accuracy": 0.55, "retention_balanced_accuracy": 1.2}
    write_json(evaluate, {**json.loads(evaluate.read_text()), **stale})

    def errors(*extra: str) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert report.main(argv(tmp_path, "tracking.enabled=false", *extra)) == 2
        assert not (tmp_path / "report.json").exists() and not (tmp_path / "reports").exists()
        return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]

    (error,) = errors("knn.k=5")
    assert f"{knn}: the float KNN ran with k = 7, params say knn.k = 5" in error
    (error,) = errors("knn.k=7")
    assert f"{evaluate}: k = 3, but the float KNN {knn} records k = 7" in error
    write_json(evaluate, {**json.loads(evaluate.read_text()), "k": 7})  # k right, other float
    (error,) = errors("knn.k=7")
    assert (
        f"{evaluate}: float_accuracy = 0.55, but the float KNN {knn} records accuracy = 0.7"
        in error
    )
    # accuracy right, but the balanced accuracy the headline retention divides by is another run's
    write_json(
        evaluate,
        {**json.loads(evaluate.read_text()), "float_accuracy": 0.7, "float_balanced_accuracy": 0.5},
    )
    (error,) = errors("knn.k=7")
    assert (
        f"{evaluate}: float_balanced_accuracy = 0.5, but the float KNN {knn} records "
        "balanced_accuracy = 0.6" in error
    )
    write_json(evaluate, {**json.loads(evaluate.read_text()), "float_balanced_accuracy": 0.6})
    assert report.main(argv(tmp_path, "tracking.enabled=false", "knn.k=7")) == 0
    md = (tmp_path / "reports/syn/report.md").read_text()
    assert "Float KNN (k = 7): balanced accuracy 0.600" in md
