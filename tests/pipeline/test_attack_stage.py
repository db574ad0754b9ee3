"""Stage ``attack`` on tiny synthetic embeddings (an embeddings-only source): float control, one
head, the float numbers beside the code numbers, and every bad input as one line with exit 2 and no
output written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import attack, train
from pipeline.artifacts import EmbeddingsFile, save_embeddings
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO

FAST = (
    "attack.shadow_heads=2",
    "attack.mi_candidates=40",
    "train.epochs=3",
    "train.val_queries=60",
    "tracking.enabled=false",
)


def args(tmp: Path, *extra: str, sets: tuple[str, ...] = ()) -> list[str]:
    out = ["--params", str(REPO / "params.yaml")]
    for s in (
        *FAST,
        f"data.sources.syn={{kind: embeddings, path: {tmp / 'syn.safetensors'}}}",
        "data.datasets=[syn]",
        *sets,
    ):
        out += ["--set", s]
    return out + list(extra)


def float_args(tmp: Path, sets: tuple[str, ...] = ()) -> list[str]:
    return args(
        tmp,
        "--dataset", "syn",
        "--embeddings", str(tmp / "syn.safetensors"),
        "--gallery", str(tmp / "gallery.safetensors"),
        "--metrics", str(tmp / "m/float.json"),
        "--sweep", str(tmp / "p/float.csv"),
        sets=sets,
    )  # fmt: skip


def head_args(tmp: Path, sets: tuple[str, ...] = (), bits: int = 16) -> list[str]:
    return args(
        tmp,
        "--dataset", "syn", "--method", "dpsh", "--bits", str(bits),
        "--embeddings", str(tmp / "syn.safetensors"),
        "--head", str(tmp / "head"),
        "--gallery", str(tmp / "gallery.safetensors"),
        "--float-metrics", str(tmp / "m/float.json"),
        "--metrics", str(tmp / "m/dpsh.json"),
        "--sweep", str(tmp / "p/dpsh.csv"),
        sets=sets,
    )  # fmt: skip


def train_head(tmp: Path, bits: int = 16, sets: tuple[str, ...] = ()) -> int:
    return train.main(
        args(
            tmp,
            "--dataset", "syn", "--method", "dpsh", "--bits", str(bits),
            "--embeddings", str(tmp / "syn.safetensors"),
            "--out", str(tmp / "head"),
            "--metrics", str(tmp / "m/train.json"),
            "--history", str(tmp / "p/train.csv"),
            sets=sets,
        )
    )  # fmt: skip


@pytest.fixture
def study(tmp_path: Path, one_thread) -> Path:
    save_embeddings(tmp_path / "syn.safetensors", synthetic_embeddings(n=(160, 60, 60), dim=16))
    assert train_head(tmp_path) == 0
    return tmp_path


def test_float_then_head_writes_regular_numbers(study: Path) -> None:
    assert attack.main(float_args(study)) == 0
    fl = json.loads((study / "m/float.json").read_text())
    assert fl["linkage/test/top1"] >= 0.9 and fl["linkage/test/top1_baseline"] == 1 / 60
    assert fl["skipped.membership"].startswith("the float release")
    assert "reconstruction/test/psnr" not in fl  # embeddings-only: skipped by default
    assert attack.main(head_args(study)) == 0
    res = json.loads((study / "m/dpsh.json").read_text())
    for key in ("linkage/test/top1", "inversion/train/cosine", "attribute/test/accuracy"):
        assert key in res and f"{key}_baseline" in res and res[f"{key}_float"] == fl[key]
    assert res["anonymity/all/r0/k_min"] >= 1 and res["bits"] == 16
    assert {"membership/auc", "membership/auc_baseline"} <= set(res)
    # 40 non-members resolve an FPR of 1/40 or more, not 1% or 0.1%
    assert res["membership/tpr_at_fpr_1pct_resolvable"] == 0.0
    assert "membership/tpr_at_fpr_1pct" not in res
    rows = (study / "p/dpsh.csv").read_text().splitlines()
    assert rows[0].startswith("group,strength,top1") and len(rows) == 1 + 2 * 3  # 2 groups x 3 SNRs
    names = [k for k in res if not k.startswith("skipped")]
    assert all(set(k) <= set("abcdefghijklmnopqrstuvwxyz0123456789_/.") for k in names)


def _no_output(tmp: Path, name: str) -> bool:
    return not (tmp / f"m/{name}.json").exists() and not (tmp / f"p/{name}.csv").exists()


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (("attack.attacks=[linkge]",), "did you mean 'linkage'"),
        (("attack.shadow_heads=1",), "at least 2 shadow heads"),
        (("attack.attacks=[reconstruction]",), "embeddings-only"),
        (("attack.aux_size=5",), "needs at least 20"),
        (("attack.withhold_label=3",), "not multi-label"),
        (("attack.aux_split=test",), "use one of 'val'"),
    ],
)
def test_bad_input_one_line_exit_2(study: Path, sets, needle, caplog) -> None:
    assert attack.main(float_args(study, sets)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and needle in errors[0] and "\n" not in errors[0]
    assert _no_output(study, "float") and not (study / "gallery.safetensors").exists()


def test_head_embeddings_mismatch_exit_2(study: Path, caplog) -> None:
    assert attack.main(float_args(study)) == 0
    other = synthetic_embeddings(n=(160, 60, 60), dim=16, seed=5)  # same layout, other records
    save_embeddings(study / "syn.safetensors", other)
    assert attack.main(head_args(study)) == 2
    assert "pass the embeddings file it was made from" in caplog.text  # the fingerprint check
    assert _no_output(study, "dpsh")


def test_withheld_label_multilabel(tmp_path: Path, one_thread) -> None:
    emb = synthetic_embeddings(n=(160, 60, 60), dim=16, multilabel=True)
    save_embeddings(tmp_path / "syn.safetensors", emb)
    assert train_head(tmp_path, sets=("attack.withhold_label=c1",)) == 0
    cfg = json.loads((tmp_path / "head/config.json").read_text())
    assert cfg["head_spec"]["n_classes"] == 2  # c1 hidden from head training
    assert train_head(tmp_path, sets=("attack.withhold_label=nope",)) == 2
    from pipeline.train import withhold_label

    kept, col = withhold_label(emb, 2)
    assert col == 2 and np.array_equal(kept.y["test"], emb.y["test"][:, :2])
    assert isinstance(kept, EmbeddingsFile) and kept.n_classes == 2
