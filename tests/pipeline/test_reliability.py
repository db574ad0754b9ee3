"""Bad inputs and faults of the stages (issue 8): each case's exit code, message and leftovers.

One row of the bad-input table in bench/README.md per case. Stages run in-process through their ``main`` (exit codes as the
command line sees them) on tiny synthetic embeddings; one head is trained once per module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import evaluate, knn, train
from pipeline.artifacts import (
    ArtifactError,
    EmbeddingsFile,
    atomic_outputs,
    atomic_path,
    load_embeddings,
    save_embeddings,
    write_json,
)
from pipeline.common import run_main
from pipeline.config import ParamsError
from pipeline.synthetic import synthetic_embeddings
from tests import stage_cli
from tests.conftest import REPO
from tests.stage_cli import FAST, IDENT

BASE = FAST


def knn_argv(emb: Path, out: Path, *extra: str) -> list[str]:
    return stage_cli.knn_argv(BASE, emb, out, *extra)


def train_argv(emb: Path, out: Path, *extra: str, method: str = "dpsh", bits: int = 12) -> list:
    return stage_cli.train_argv(BASE, emb, out, *extra, method=method, bits=bits)


def eval_argv(emb: Path, head: Path, float_metrics: Path, out: Path, *ident: str) -> list[str]:
    return stage_cli.eval_argv(BASE, emb, out, *ident, head=head, float_metrics=float_metrics)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def no_stray_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".*") if p.suffix in (".tmp", ".bak")]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """knn + train once on synthetic embeddings (read-only for the tests)."""
    root = tmp_path_factory.mktemp("study")
    emb = root / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    assert knn.main(knn_argv(emb, root)) == 0
    assert train.main(train_argv(emb, root)) == 0
    return {"root": root, "emb": emb, "head": root / "head", "knn": root / "knn.json"}


def permuted_labels(path: Path) -> None:
    """Same rows, same backbone and metadata, test labels permuted: the issue's silent case."""
    emb = synthetic_embeddings()
    y = dict(emb.y)
    y["test"] = np.random.default_rng(1).permutation(y["test"])
    save_embeddings(path, EmbeddingsFile(x=emb.x, y=y, meta=emb.meta))


# ------------------------------------------------------------------------------------------
# silently wrong results
# ------------------------------------------------------------------------------------------


def test_evaluate_accepts_the_matching_inputs(study: dict[str, Path], tmp_path: Path) -> None:
    argv = eval_argv(study["emb"], study["head"], study["knn"], tmp_path, *IDENT)
    assert evaluate.main(argv) == 0
    m = json.loads((tmp_path / "eval.json").read_text())
    assert m["embeddings_fingerprint"] == load_embeddings(study["emb"]).fingerprint
    # the float KNN records chance (1 / classes) for the report's near-chance warning
    n_classes = load_embeddings(study["emb"]).n_classes
    chance = json.loads(study["knn"].read_text())["chance_balanced_accuracy"]
    assert n_classes > 1 and chance == pytest.approx(1 / n_classes)


def test_evaluate_refuses_embeddings_with_permuted_labels(
    study: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "permuted.safetensors"
    permuted_labels(other)
    code = evaluate.main(eval_argv(other, study["head"], study["knn"], tmp_path / "o", *IDENT))
    assert code == 2
    assert str(study["head"] / "config.json") in caplog.text and str(other) in caplog.text
    assert "fingerprint" in caplog.text
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_float_metrics_of_other_embeddings(
    study: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "permuted.safetensors"
    permuted_labels(other)
    assert knn.main(knn_argv(other, tmp_path)) == 0
    code = evaluate.main(
        eval_argv(study["emb"], study["head"], tmp_path / "knn.json", tmp_path / "o", *IDENT)
    )
    assert code == 2 and str(tmp_path / "knn.json") in caplog.text
    assert str(study["emb"]) in caplog.text and not (tmp_path / "o").exists()


def test_embeddings_file_edited_after_writing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    save_embeddings(path, synthetic_embeddings())
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # flip one bit of the last test label
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the fingerprint"):
        load_embeddings(path)


def test_fingerprint_depends_on_content_not_metadata() -> None:
    a = synthetic_embeddings()
    b = synthetic_embeddings(backbone="another")  # same arrays, other metadata
    assert a.fingerprint == b.fingerprint
    y = dict(a.y)
    y["train"] = y["train"].copy()
    y["train"][[0, 1]] = y["train"][[1, 0]]
    assert EmbeddingsFile(x=a.x, y=y, meta=a.meta).fingerprint != a.fingerprint


def test_evaluate_reads_dataset_method_bits_from_the_head(
    study: dict[str, Path], tmp_path: Path
) -> None:
    assert evaluate.main(eval_argv(study["emb"], study["head"], study["knn"], tmp_path)) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["bits"] == 12


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        (["--method", "tcl"], "--method tcl: the head in"),
        (["--dataset", "retinamnist"], "--dataset retinamnist: the head in"),
        (["--bits", "24"], "--bits 24: the head in"),
    ],
)
def test_evaluate_refuses_identity_other_than_the_heads(
    study: dict[str, Path], tmp_path: Path, caplog, ident: list[str], message: str
) -> None:
    code = evaluate.main(eval_argv(study["emb"], study["head"], study["knn"], tmp_path, *ident))
    assert code == 2 and message in caplog.text and "config.json" in caplog.text
    assert not (tmp_path / "eval.json").exists()


def test_one_k_rule_in_knn_and_train(tmp_path: Path, caplog) -> None:
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())  # 300 training rows
    too_big = ("--set", "knn.k=301")
    assert knn.main(knn_argv(emb, tmp_path / "k", *too_big)) == 2
    assert train.main(train_argv(emb, tmp_path / "t", *too_big)) == 2
    rule = "knn.k: k=301 exceeds the 300 rows of the training split"
    assert caplog.text.count(rule) == 2
    caplog.clear()
    small_db = ("--set", "train.val_database=5")  # knn.k = 7 > the 5-row selection database
    assert train.main(train_argv(emb, tmp_path / "t", *small_db)) == 2
    assert "train.val_database: the model-selection database of 5 rows" in caplog.text
    assert not (tmp_path / "k").exists() and not (tmp_path / "t").exists()


def test_trainer_refuses_k_beyond_its_database() -> None:
    from hashers import registry
    from hashers.base import HashingError, HeadSpec
    from hashers.trainer import val_scores
    from pipeline.synthetic import gaussian_clusters

    data = gaussian_clusters(5, seed=0, n_classes=2)
    method = registry.build("lsh", HeadSpec(in_dim=32, n_bits=8, n_classes=2), None, seed=0)
    method.on_fit_start(data)
    with pytest.raises(HashingError, match="k=7 exceeds the 5 rows"):
        val_scores(method, data, data, k=7)


def test_multi_hot_labels_with_different_widths_are_refused_at_load(tmp_path: Path) -> None:
    arrays = {f"{s}_x": np.ones((6, 4), dtype=np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": np.eye(3, dtype=np.uint8)[np.arange(6) % 3] for s in ("train", "val")})
    arrays["test_y"] = np.eye(4, dtype=np.uint8)[np.arange(6) % 4]
    np.savez(tmp_path / "ml.npz", **arrays)
    with pytest.raises(ArtifactError, match=r"train_y has 3, val_y has 3, test_y has 4 columns"):
        load_embeddings(tmp_path / "ml.npz")
    assert knn.main(knn_argv(tmp_path / "ml.npz", tmp_path / "k")) == 2
    assert not (tmp_path / "k").exists()


# ------------------------------------------------------------------------------------------
# one clear line naming the file or key
# ------------------------------------------------------------------------------------------


def test_label_beyond_declared_classes_is_named(tmp_path: Path, caplog) -> None:
    arrays = {f"{s}_x": np.ones((6, 4), dtype=np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": np.arange(6) % 2 for s in ("train", "val", "test")})
    arrays["test_y"] = np.array([0, 1, 3, 0, 1, 0])
    np.savez(tmp_path / "u.npz", meta=np.array(json.dumps({"n_classes": 2})), **arrays)
    assert knn.main(knn_argv(tmp_path / "u.npz", tmp_path / "k")) == 2
    assert "u.npz: test_y holds class id 3 but the metadata declares n_classes=2" in caplog.text
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"k": 7, "balanced_accuracy": 0.5, "macro_f1": 0.5}', "missing 'accuracy'"),
        ('{"k": 7, "accuracy": ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_broken_float_metrics_file_is_named(
    study: dict[str, Path], tmp_path: Path, caplog, content: str, message: str
) -> None:
    bad = tmp_path / "knn.json"
    bad.write_text(content)
    code = evaluate.main(eval_argv(study["emb"], study["head"], bad, tmp_path / "o"))
    assert code == 2 and f"{bad}: {message}" in caplog.text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"k": "seven"}, "k is 'seven', not an integer"),
        ({"accuracy": None}, "accuracy is None, not a score in [0, 1]"),
        ({"balanced_accuracy": 75.6}, "balanced_accuracy is 75.6, not a score in [0, 1]"),
        ({"metric_space": "cosine"}, "the float KNN ran with knn.metric=cosine, params say"),
    ],
)
def test_a_hand_edited_float_baseline_is_named(
    study: dict[str, Path], tmp_path: Path, caplog, edit: dict, message: str
) -> None:
    """Retentions divide by these numbers: a float baseline edited by hand (or of another
    knn.metric) is one line naming the file and key, not a traceback (exit 1)."""
    bad = tmp_path / "knn.json"
    bad.write_text(json.dumps({**json.loads(study["knn"].read_text()), **edit}))
    code = evaluate.main(eval_argv(study["emb"], study["head"], bad, tmp_path / "o"))
    assert (
        code == 2 and f"{bad}: {message}" in caplog.text and "re-run the knn stage" in caplog.text
    )
    assert not (tmp_path / "o").exists()


def test_broken_head_config_is_named(study: dict[str, Path], tmp_path: Path, caplog) -> None:
    head = tmp_path / "head"
    shutil.copytree(study["head"], head)
    (head / "config.json").write_text('{"method": "dpsh",')
    code = evaluate.main(eval_argv(study["emb"], head, study["knn"], tmp_path / "o"))
    assert code == 2 and f"{head / 'config.json'}: not valid JSON" in caplog.text
    (head / "config.json").write_text('{"method": "dpsh"}')
    assert evaluate.main(eval_argv(study["emb"], head, study["knn"], tmp_path / "o")) == 2
    assert f"{head / 'config.json'}: missing 'dataset', 'head_spec', 'embeddings'" in caplog.text


def test_codes_of_another_head_are_refused(study: dict[str, Path], tmp_path: Path, caplog) -> None:
    """A head folder whose codes another head encoded (files of two train runs mixed) is not
    evaluated as one head: the codes record their head's SHA-256."""
    from safetensors.torch import load_file, save_file

    head = tmp_path / "head"
    shutil.copytree(study["head"], head)
    assert evaluate.main(eval_argv(study["emb"], head, study["knn"], tmp_path / "ok")) == 0
    state = load_file(str(head / "head.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name] + 1.0  # another run's weights, same shapes
    save_file(state, str(head / "head.safetensors"))
    code = evaluate.main(eval_argv(study["emb"], head, study["knn"], tmp_path / "o"))
    assert code == 2 and f"{head / 'codes.safetensors'}: encoded by another head" in caplog.text
    assert "re-run its train stage" in caplog.text
    assert not (tmp_path / "o").exists()


def test_nan_in_a_users_npz_names_the_file(tmp_path: Path, caplog) -> None:
    """A bad row in an embeddings file given straight to a stage names that file (the message
    named the dataset, or the word "embeddings" for a file without metadata)."""
    emb = synthetic_embeddings()
    arrays = {f"{s}_{k}": getattr(emb, k)[s] for s in ("train", "val", "test") for k in "xy"}
    arrays["test_x"] = arrays["test_x"].copy()
    arrays["test_x"][5, 0] = np.nan
    np.savez(tmp_path / "mine.npz", **arrays)
    assert knn.main(knn_argv(tmp_path / "mine.npz", tmp_path / "k")) == 2
    assert f"{tmp_path / 'mine.npz'}: test_x holds 1 NaN/inf values (first in row 5)" in (
        caplog.text
    )


def test_npy_content_under_an_npz_name_is_named_not_a_traceback(tmp_path: Path, caplog) -> None:
    """``np.save(open("mine.npz", "wb"), x)`` writes one .npy array (no suffix is added to a file
    handle): ``np.load`` returns an ndarray, and ``with`` on it raised TypeError (exit 1)."""
    path = tmp_path / "mine.npz"
    with path.open("wb") as fh:
        np.save(fh, np.zeros((3, 2), dtype=np.float32))
    assert knn.main(knn_argv(path, tmp_path / "k")) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"{path}: holds one float32 (3, 2) array (the .npy format), not an .npz archive of named "
        "arrays; save it with np.savez(path, train_x=..., train_y=..., test_x=..., test_y=...)"
    ]
    assert not (tmp_path / "k").exists()


def test_a_float8_or_float4_embeddings_file_is_read_or_named_not_a_traceback(
    tmp_path: Path, caplog
) -> None:
    """NumPy has no float8 or float4: a user's quantised embeddings file raised AttributeError
    from inside safetensors (exit 1, traceback). float8 is widened to float32 (exactly) and the
    stage runs; packed float4, which torch cannot widen, is one line naming the tensor (exit 2)."""
    from safetensors.torch import save_file

    emb = synthetic_embeddings()
    y = {f"{s}_y": torch.from_numpy(emb.y[s].copy()) for s in emb.y}
    x8 = {f"{s}_x": torch.from_numpy(emb.x[s].copy()).to(torch.float8_e4m3fn) for s in emb.x}
    save_file({**x8, **y}, str(tmp_path / "f8.safetensors"))
    assert knn.main(knn_argv(tmp_path / "f8.safetensors", tmp_path / "k8")) == 0
    assert (tmp_path / "k8" / "knn.json").is_file()
    x4 = {
        k: torch.zeros(len(v), 8, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
        for k, v in x8.items()
    }
    save_file({**x4, **y}, str(tmp_path / "f4.safetensors"))
    assert knn.main(knn_argv(tmp_path / "f4.safetensors", tmp_path / "k4")) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"{tmp_path / 'f4.safetensors'}: tensor 'test_x' has dtype F4, which cannot be read as "
        "float32; save it as float32 (embeddings) or int64 (labels)"
    ]
    assert not (tmp_path / "k4").exists()


def test_a_dataset_other_than_the_embeddings_is_refused(tmp_path: Path, caplog) -> None:
    """Outputs are filed, tagged and reported under ``--dataset``: it must be the data set the
    embeddings hold (their metadata), in every stage that reads them."""
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings(dataset="breastmnist"))
    message = f"--dataset syn: {emb} holds embeddings of dataset 'breastmnist' (its metadata)"
    assert knn.main(knn_argv(emb, tmp_path / "k")) == 2
    assert message in caplog.text and "pass --dataset breastmnist" in caplog.text
    caplog.clear()
    assert train.main(train_argv(emb, tmp_path / "t")) == 2
    assert message in caplog.text
    assert not (tmp_path / "k").exists() and not (tmp_path / "t").exists()


def test_huge_but_finite_embeddings_get_the_right_advice(tmp_path: Path, caplog) -> None:
    emb = synthetic_embeddings()
    arrays = {f"{s}_x": emb.x[s] * np.float32(1e20) for s in emb.x}
    arrays.update({f"{s}_y": emb.y[s] for s in emb.y})
    assert all(np.isfinite(v).all() for v in arrays.values())
    np.savez(tmp_path / "huge.npz", **arrays)
    assert knn.main(knn_argv(tmp_path / "huge.npz", tmp_path / "k")) == 2
    assert train.main(train_argv(tmp_path / "huge.npz", tmp_path / "t")) == 2
    assert caplog.text.count("overflow float32") == 2 and "rescale the embeddings" in caplog.text
    assert "train.lr" not in caplog.text
    assert not (tmp_path / "k").exists() and not (tmp_path / "t").exists()


def test_large_inputs_that_break_a_loss_are_not_blamed_on_the_lr(tmp_path: Path, caplog) -> None:
    """1e17 passes the file check (LayerNorm heads train fine on it), but SAEH reconstructing the
    raw embedding (no input standardisation, no normalised target) overflows: the message names
    the inputs' scale, not train.lr. (With standardisation, the default, SAEH rebuilds the
    standardised input and trains on such inputs.)"""
    emb = synthetic_embeddings()
    big = EmbeddingsFile(
        x={s: v * np.float32(1e17) for s, v in emb.x.items()}, y=emb.y, meta=emb.meta
    )
    save_embeddings(tmp_path / "big.safetensors", big)
    argv = train_argv(
        tmp_path / "big.safetensors",
        tmp_path / "t",
        "--set",
        "methods.saeh.normalize_target=false",
        "--set",
        "train.standardize=false",
        method="saeh",
    )
    assert train.main(argv) == 2
    assert "loss became non-finite" in caplog.text and "rescale them" in caplog.text
    assert "train.lr" not in caplog.text and not (tmp_path / "t").exists()
    i = argv.index("train.standardize=false")  # drop it and its "--set": the default standardises
    assert train.main(argv[: i - 1] + argv[i + 1 :]) == 0


# ------------------------------------------------------------------------------------------
# outputs: writable before work, all or nothing, errors name the target
# ------------------------------------------------------------------------------------------


def test_out_that_is_an_existing_file_is_refused_before_training(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    (tmp_path / "head").write_text("not a folder")
    monkeypatch.setattr(train, "train_one", lambda *a, **k: pytest.fail("trained anyway"))
    assert train.main(train_argv(emb, tmp_path)) == 2
    assert f"{tmp_path / 'head'}: an output folder is expected here but a file exists" in (
        caplog.text
    )
    assert files_under(tmp_path) == ["e.safetensors", "head"]


@pytest.mark.parametrize("case", ["metrics_is_a_folder", "parent_is_a_file"])
def test_unwritable_knn_outputs_are_refused_before_work(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    out = tmp_path / "out"
    out.mkdir()
    if case == "metrics_is_a_folder":
        (out / "knn.json").mkdir()
        message = "an output file is expected here but a folder exists"
    else:
        (out / "knn").write_text("a file where the confusion folder goes")
        message = "is a file, not a folder"
    monkeypatch.setattr(knn, "float_knn", lambda *a: pytest.fail("ran anyway"))
    assert knn.main(knn_argv(emb, out)) == 2 and message in caplog.text


def test_failed_write_after_training_leaves_no_output(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics JSON is written last; it fails (disk full): head, codes and history, written
    before it, must not stay, and the error names metrics' path, not a temp file."""
    import pipeline.tracking as tracking

    def disk_full(path, text):
        with atomic_path(path) as tmp:
            tmp.write_text("{")
            raise OSError(28, "No space left on device")

    emb = tmp_path / "e.safetensors"
    save_embeddings(emb, synthetic_embeddings())
    monkeypatch.setattr(tracking, "write_text", disk_full)
    assert train.main(train_argv(emb, tmp_path / "run")) == 2
    target = tmp_path / "run" / "train.json"
    assert f"{target}: cannot write this output (No space left on device)" in caplog.text
    assert ".tmp" not in caplog.text
    assert not (tmp_path / "run").exists()  # folders made for the outputs are removed too
    assert files_under(tmp_path) == ["e.safetensors"]


def test_failed_rerun_keeps_the_previous_outputs(
    study: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.tracking as tracking

    run = tmp_path / "run"
    shutil.copytree(study["root"], run)
    before = {p: (run / p).read_bytes() for p in files_under(run)}

    def disk_full(path, text):
        raise ArtifactError(f"{path}: cannot write this output (No space left on device)")

    monkeypatch.setattr(tracking, "write_text", disk_full)
    assert train.main(train_argv(run / "emb.safetensors", run, "--set", "seed=3")) == 2
    assert {p: (run / p).read_bytes() for p in files_under(run)} == before
    assert no_stray_temp_files(run)


def test_atomic_outputs_all_or_nothing(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"v": 0})
    with pytest.raises(KeyboardInterrupt), atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 1})
        write_json(tmp_path / "sub" / "b.json", {"v": 1})
        raise KeyboardInterrupt
    assert files_under(tmp_path) == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 0}
    # a failure while moving the files in (b's target became a folder): a is put back as it was
    (tmp_path / "b.json").mkdir()
    with pytest.raises(ArtifactError, match=r"b\.json: cannot write this output"), atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 2})
        write_json(tmp_path / "b.json", {"v": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 0}
    assert no_stray_temp_files(tmp_path)
    with atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 3})
        write_json(tmp_path / "c.json", {"v": 3})
        assert json.loads((tmp_path / "a.json").read_text()) == {"v": 0}  # not before the end
    assert json.loads((tmp_path / "c.json").read_text()) == {"v": 3}
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 3}


def _replace_then(monkeypatch: pytest.MonkeyPatch, on_call: int, action) -> None:
    """Make the ``on_call``-th ``os.replace`` of pipeline.artifacts run ``action`` first."""
    import pipeline.artifacts as artifacts

    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == on_call:
            action()
        return real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)


def _interrupted_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Commit new a.json and b.json (v=1) under the patches set, expect the interrupt, undo the
    patches, check no temp file is left; return the files' values."""
    with pytest.raises(KeyboardInterrupt), atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 1})
        write_json(tmp_path / "b.json", {"v": 1})
    monkeypatch.undo()
    assert no_stray_temp_files(tmp_path)
    return [json.loads((tmp_path / n).read_text())["v"] for n in ("a.json", "b.json")]


def test_commit_holds_ctrl_c_until_every_file_has_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT between two renames of the commit (a head's new head.safetensors in, its
    old codes not yet replaced) is held back until the block has landed whole, then raised."""
    for name in ("a.json", "b.json"):
        write_json(tmp_path / name, {"v": 0})
    # replace calls: a -> backup, a.tmp -> a, b -> backup (the signal arrives here), b.tmp -> b
    _replace_then(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    assert _interrupted_commit(tmp_path, monkeypatch) == [1, 1]


def test_commit_rolls_back_on_an_interrupt_it_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where signals cannot be held (a commit outside the main thread), an interrupt raised
    mid-commit puts every file back as it was; nothing is left in a ``.bak``."""
    import pipeline.artifacts as artifacts

    for name in ("a.json", "b.json"):
        write_json(tmp_path / name, {"v": 0})

    def interrupt() -> None:
        raise KeyboardInterrupt

    _replace_then(monkeypatch, 3, interrupt)
    monkeypatch.setattr(artifacts, "_signals_held", contextlib.nullcontext)  # as off main
    assert _interrupted_commit(tmp_path, monkeypatch) == [0, 0]


def test_a_failed_rollback_names_the_backups_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit fails on b (disk error) and putting a's old file back fails too: the error says
    where the old file is kept instead of a bare OSError traceback."""
    import pipeline.artifacts as artifacts

    for name in ("a.json", "b.json"):
        write_json(tmp_path / name, {"v": 0})
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 4 or (len(calls) > 4 and Path(dst).name == "a.json"):
            raise OSError(5, "Input/output error")  # b's new file, then a's restore
        return real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)
    with pytest.raises(ArtifactError) as err, atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 1})
        write_json(tmp_path / "b.json", {"v": 1})
    monkeypatch.undo()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".a.json.")]
    assert len(left) == 1 and json.loads(left[0].read_text()) == {"v": 0}
    assert f"they are kept as {left[0]}" in str(err.value)
    assert json.loads((tmp_path / "b.json").read_text()) == {"v": 0}  # b was put back


def test_every_handler_is_restored_when_a_signal_fires_during_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``signal.signal`` runs a pending handler before it swaps: a Ctrl-C that fires while the
    handlers are put back must not leave the recording handler installed for SIGTERM."""
    import pipeline.artifacts as artifacts

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real, fired = signal.signal, []

    def swap(signum, handler):
        restoring = handler is before.get(signum) and signum == signal.SIGTERM
        if restoring and not fired:
            fired.append(signum)
            raise KeyboardInterrupt  # the restored SIGINT handler, run by the pending check
        return real(signum, handler)

    monkeypatch.setattr(artifacts.signal, "signal", swap)
    with pytest.raises(KeyboardInterrupt), atomic_outputs():
        write_json(tmp_path / "a.json", {"v": 1})
    monkeypatch.undo()
    assert {s: signal.getsignal(s) for s in before} == before
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1} and fired


def test_a_download_inside_the_block_is_not_an_output(tmp_path: Path, caplog) -> None:
    """Ctrl-C after extract downloaded its input (``atomic_path(stage=False)``) but before its
    outputs: "no output of this stage was written" (it said the outputs had landed)."""

    def body(argv) -> None:
        with atomic_outputs():
            with atomic_path(tmp_path / "download.npz", stage=False) as tmp:
                tmp.write_bytes(b"data")
            raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR):
        assert run_main(body, []) == 130
    assert "no output of this stage was written" in caplog.text
    assert (tmp_path / "download.npz").read_bytes() == b"data"


def test_interrupt_after_the_outputs_landed_says_so(tmp_path: Path, caplog) -> None:
    """The interrupt message tells the truth: nothing written, or the complete outputs were."""

    def body(argv) -> None:
        with atomic_outputs():
            write_json(tmp_path / "out.json", {"v": 1})
        raise KeyboardInterrupt  # e.g. Ctrl-C while MLflow logs, after the files landed

    def early(argv) -> None:
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR):
        assert run_main(early, []) == 130
        assert "no output of this stage was written" in caplog.text
        caplog.clear()
        assert run_main(body, []) == 130
    assert "outputs had already been written (1 file(s)" in caplog.text
    assert "out.json" in caplog.text and "no output" not in caplog.text


# ------------------------------------------------------------------------------------------
# reproducibility
# ------------------------------------------------------------------------------------------


def test_two_runs_write_byte_identical_head_codes_and_embeddings(
    study: dict[str, Path], tmp_path: Path
) -> None:
    assert train.main(train_argv(study["emb"], tmp_path)) == 0
    for name in ("head.safetensors", "codes.safetensors", "config.json"):
        assert (tmp_path / "head" / name).read_bytes() == (study["head"] / name).read_bytes()
    assert (tmp_path / "train.csv").read_bytes() == (study["root"] / "train.csv").read_bytes()
    # the float baseline is a dependency of every evaluate stage: byte-identical too
    assert knn.main(knn_argv(study["emb"], tmp_path)) == 0
    for name in ("knn.json", "knn.csv", "knn/confusion.json", "knn/confusion.png"):
        assert (tmp_path / name).read_bytes() == (study["root"] / name).read_bytes(), name
    # safetensors keeps metadata in a hash map whose order changes with every call (measured:
    # 20 saves of one file in one process gave 20 different byte strings before sorting)
    for name in ("e1.safetensors", "e2.safetensors"):
        save_embeddings(tmp_path / name, synthetic_embeddings())
    one, two = (
        (tmp_path / "e1.safetensors").read_bytes(),
        (tmp_path / "e2.safetensors").read_bytes(),
    )
    assert one == two == study["emb"].read_bytes()
    n = int.from_bytes(one[:8], "little")
    meta = list(json.loads(one[8 : 8 + n])["__metadata__"])
    assert meta == sorted(meta) and n % 8 == 0


# ------------------------------------------------------------------------------------------
# error classes: user errors exit 2 in one line, bugs keep their traceback, Ctrl-C exits 130
# ------------------------------------------------------------------------------------------


def test_user_error_is_one_line_exit_2(
    study: dict[str, Path], tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad_params(*a):
        raise ParamsError("knn.k: 0 must be >= 1")

    monkeypatch.setattr(knn, "float_knn", bad_params)
    with caplog.at_level(logging.ERROR):
        assert knn.main(knn_argv(study["emb"], tmp_path)) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["knn.k: 0 must be >= 1"]
    assert errors[0].exc_info is None and not (tmp_path / "knn.json").exists()


def test_a_bug_keeps_its_traceback(
    study: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def numpy_bug(*a):
        return np.zeros(3) + np.zeros(4)  # ValueError from inside numpy: a bug, not bad input

    monkeypatch.setattr(knn, "float_knn", numpy_bug)
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        knn.main(knn_argv(study["emb"], tmp_path))
    assert not (tmp_path / "knn.json").exists()


def test_a_bug_exits_1_with_traceback_on_the_command_line() -> None:
    script = (
        "import sys, numpy as np; from pipeline.common import run_main; "
        "sys.exit(run_main(lambda argv: np.zeros(3) + np.zeros(4), []))"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "operands could not be broadcast" in res.stderr


def test_an_unknown_log_level_is_one_line_exit_2() -> None:
    """``HASHAUDIT_LOG=verbose`` (a typo of a level) raised ValueError from logging.basicConfig
    before the stage's error handling: a traceback and exit 1 for a bad setting."""
    script = (
        "import sys; from pipeline.common import run_main; "
        "sys.exit(run_main(lambda argv: print('body ran'), []))"
    )
    env = {**os.environ, "HASHAUDIT_LOG": "verbose"}
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert (res.returncode, res.stdout, "Traceback" in res.stderr) == (2, "", False)
    assert res.stderr.strip().endswith(
        "ERROR hashaudit: HASHAUDIT_LOG='verbose': not a log level; use DEBUG, INFO, WARNING or "
        "ERROR (or unset HASHAUDIT_LOG)"
    )
    assert len(res.stderr.strip().splitlines()) == 1


def test_ctrl_c_is_a_short_message_and_exit_130(
    study: dict[str, Path], tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(knn, "float_knn", interrupted)
    assert knn.main(knn_argv(study["emb"], tmp_path)) == 130
    assert "interrupted" in caplog.text and "Traceback" not in caplog.text
    assert files_under(tmp_path) == []


def test_missing_file_is_exit_2() -> None:
    def body(argv):
        open("/nonexistent/hashaudit/file")  # noqa: SIM115

    assert run_main(body, []) == 2
