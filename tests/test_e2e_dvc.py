"""End to end: `dvc repro` on real BreastMNIST files with the tiny random backbone, offline.

Copies the pipeline into a temporary git + DVC repo, points data.root at the shared MedMNIST files,
runs every stage (extract -> knn -> train -> evaluate -> attack-float / attack -> defences -> report)
through DVC and checks the metrics files, the report and the MLflow store (one parent run per
study). The attacks run small (2 shadow heads, one extra gallery strength) to keep the test fast.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert res.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    )
    return res


def test_dvc_repro_breastmnist_tiny_backbone(tmp_path: Path, shared_medmnist: Path) -> None:
    work = tmp_path / "study"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    for pkg in ("pipeline", "hashers", "retrieval", "privacy"):
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(root=str(shared_medmnist), download=False, datasets=["breastmnist"])
    params["backbone"].update(name="tiny-random", image_size=56, batch_size=64)
    params["train"].update(methods=["dpsh"], bits=[12, 48], epochs=3, val_queries=78)
    params["dp"].update(methods=["csq"], epsilons=[8], epochs=3)  # one DP head per bit length
    params["release"].update(epsilons=[4])
    params["attack"].update(shadow_heads=2, mi_candidates=50, strength_sweep=[1.0])
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {
        **os.environ,
        "HASHAUDIT_TRACKING": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env["PYTHONPATH"] = str(
        work
    )  # the copied packages, exactly as a user's checkout would run them
    _run(["git", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "repro"], work, env)

    knn = json.loads((work / "metrics/knn/breastmnist.json").read_text())
    assert knn["n_queries"] == 156 and knn["n_database"] == 546 and 0.5 <= knn["accuracy"] <= 1.0
    for bits in (12, 48):
        ev = json.loads((work / f"metrics/evaluate/breastmnist/dpsh-{bits}.json").read_text())
        assert (
            0.0 <= ev["accuracy"] <= 1.0
            and ev["bits"] == bits
            and ev["float_accuracy"] == knn["accuracy"]
        )
        # the retention's bootstrap interval over the 156 test queries (knn's predictions file)
        for metric in ("balanced_accuracy", "accuracy"):
            assert ev[f"retention_{metric}_low"] <= ev[f"retention_{metric}_high"]
        tr = json.loads((work / f"metrics/train/breastmnist/dpsh-{bits}.json").read_text())
        assert 1 <= tr["epochs_run"] <= 3
    dp = json.loads((work / "metrics/train_dp/breastmnist/csq-12-eps8.json").read_text())
    assert 0 < dp["dp_epsilon"] <= 8.0
    assert (work / "metrics/evaluate_rr/breastmnist/dpsh-48-rr4.json").is_file()
    assert (work / "metrics/evaluate_kanon/breastmnist/dpsh-12.json").is_file()
    preds = json.loads((work / "artifacts/knn/breastmnist/predictions.json").read_text())
    assert len(preds["pred"]) == 156 and preds["k"] == knn["k"]
    curves = (work / "plots/curves/breastmnist.csv").read_text().splitlines()
    assert len(curves) == 1 + 2  # header + dpsh at 12 and 48 bits
    fl = json.loads((work / "metrics/attack/breastmnist/float.json").read_text())
    assert fl["aux_size"] == 78 and fl["linkage/test/gallery_size"] == 156
    assert "reconstruction/test/psnr_baseline" in fl  # an image source: reconstruction runs
    for bits in (12, 48):
        at = json.loads((work / f"metrics/attack/breastmnist/dpsh-{bits}.json").read_text())
        assert at["bits"] == bits and at["membership/shadow_heads"] == 2
        assert at["linkage/test/top1_float"] == fl["linkage/test/top1"]
        assert 0.0 <= at["anonymity/test/r0/share_unique"] <= 1.0
        sweep = (work / f"plots/attack/breastmnist/dpsh-{bits}.csv").read_text().splitlines()
        assert len(sweep) == 1 + 2 * 2  # train and test at strengths 0.5 and 1.0
    # the attacks on the released codes: the same metric names, ε = ∞ closing the release curve
    rr = json.loads((work / "metrics/attack_rr/breastmnist/dpsh-48-rr4.json").read_text())
    kanon = json.loads((work / "metrics/attack_kanon/breastmnist/dpsh-12.json").read_text())
    for released in (rr, kanon):
        assert "linkage/test/top1" in released and "linkage/test/top1_float" in released
    release_k = params["release"]["k"]
    assert kanon["linkage/train/top1"] <= 1 / release_k + 1e-9  # the released db: ties share
    curve = (work / "plots/release_curve/breastmnist/dpsh-48.csv").read_text().splitlines()
    assert curve[0].startswith("epsilon_code,") and len(curve) == 1 + 2  # ε_code 4 and ∞
    assert curve[1].startswith("4") and curve[2].startswith("inf,")
    # the report: every release of the study, the float embeddings first
    rep = json.loads((work / "metrics/report/breastmnist.json").read_text())
    assert rep["releases"] == 1 + 2 + 2 + 2 + 2  # float, codes, DP (csq ε 8), rr (ε 4), k-anon
    with open(work / "reports/breastmnist/tradeoff.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    kinds = [r["release"] for r in table]
    assert kinds == ["float", "codes", "codes", "dp", "dp", "rr", "rr", "kanon", "kanon"]
    # the DP heads are attacked too: DP-SGD bounds membership, not linkage
    dp_at = json.loads((work / "metrics/attack_dp/breastmnist/csq-12-eps8.json").read_text())
    assert "membership/auc" in dp_at and dp_at["membership/shadow_heads"] == 2
    assert all(r["linkage_test_share"] != "" for r in table if r["release"] == "dp")
    assert (work / "reports/breastmnist/pareto-linkage.png").is_file()
    assert (
        "# Privacy/utility report: breastmnist"
        in (work / "reports/breastmnist/report.md").read_text()
    )
    ex = json.loads((work / "metrics/extract/breastmnist.json").read_text())
    assert ex  # the extract stage reports its counts
    assert (work / "dvc.lock").is_file()
    status = _run([sys.executable, "-m", "dvc", "status"], work, env)
    # everything up to date after repro, but the source digests, which run on every repro
    lines = [ln.strip() for ln in status.stdout.splitlines() if ln.strip()]
    assert lines == ["source@breastmnist:", "always changed"], status.stdout
    stamp = json.loads((work / "artifacts/sources/breastmnist.json").read_text())
    assert stamp == {"dataset": "breastmnist", "kind": "medmnist", "inputs": []}
    rerun = _run([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Running stage 'source@breastmnist'" in rerun.stdout
    assert "Running stage 'extract@breastmnist'" not in rerun.stdout  # same digest: skipped

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=params["tracking"]["uri"])
    exp = client.get_experiment_by_name("hashaudit")
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in runs}
    study = {
        "extract@breastmnist",
        "knn@breastmnist",
        "train@breastmnist-dpsh-12",
        "evaluate@breastmnist-dpsh-48",
        "attack@breastmnist-float",
        "attack@breastmnist-dpsh-12",
        "train_dp@breastmnist-csq-12-eps8",
        "evaluate_dp@breastmnist-csq-12-eps8",
        "attack_dp@breastmnist-csq-48-eps8",
        "release_rr@breastmnist-dpsh-12-eps4",
        "evaluate_rr@breastmnist-dpsh-12-eps4",
        "attack_rr@breastmnist-dpsh-12-eps4",
        "evaluate_kanon@breastmnist-dpsh-48",
        "attack_kanon@breastmnist-dpsh-48",
    }
    assert study | {"report@breastmnist"} <= names
    assert len(runs) == len(names)  # one run per stage: no two stages share a name
    # the report's run is the parent of the study's runs (nested in mlflow ui)
    parent = next(r.info.run_id for r in runs if r.info.run_name == "report@breastmnist")
    nested = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert study <= nested
