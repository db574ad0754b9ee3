"""Stage ``attack`` on tiny synthetic embeddings (an embeddings-only source): float control, one
head, the float numbers beside the code numbers, and every bad input as one line with exit 2 and no
output written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import attack, evaluate, knn, train, train_dp
from pipeline.artifacts import (
    ArtifactError,
    EmbeddingsFile,
    load_codes,
    load_embeddings,
    save_embeddings,
)
from pipeline.common import stage_argv
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO
from tests.pipeline.sources.source_helpers import hf_cache  # noqa: F401

FAST = (
    "attack.shadow_heads=2",
    "attack.mi_candidates=40",
    "train.epochs=3",
    "train.val_queries=60",
    "tracking.enabled=false",
)


def args(tmp: Path, *extra: str, sets: tuple[str, ...] = (), **flags: object) -> list[str]:
    out = ["--params", str(REPO / "params.yaml")]
    for s in (
        *FAST,
        f"data.sources.syn={{kind: embeddings, path: {tmp / 'syn.safetensors'}}}",
        "data.datasets=[syn]",
        *sets,
    ):
        out += ["--set", s]
    return stage_argv(*out, *extra, **flags)


def float_args(
    tmp: Path, sets: tuple[str, ...] = (), *, dataset: str = "syn", emb: str = "syn.safetensors"
) -> list[str]:
    return args(
        tmp, sets=sets, dataset=dataset, embeddings=tmp / emb, gallery=tmp / "gallery.safetensors",
        metrics=tmp / "m/float.json", sweep=tmp / "p/float.csv",
    )  # fmt: skip


def head_args(tmp: Path, sets: tuple[str, ...] = (), bits: int = 16) -> list[str]:
    return args(
        tmp, sets=sets, dataset="syn", method="dpsh", bits=bits,
        embeddings=tmp / "syn.safetensors", head=tmp / "head", gallery=tmp / "gallery.safetensors",
        float_metrics=tmp / "m/float.json", metrics=tmp / "m/dpsh.json", sweep=tmp / "p/dpsh.csv",
    )  # fmt: skip


def head_train_args(
    tmp: Path, bits: int = 16, sets: tuple[str, ...] = (), out: str = "head"
) -> list[str]:
    return args(
        tmp, sets=sets, dataset="syn", method="dpsh", bits=bits, embeddings=tmp / "syn.safetensors",
        out=tmp / out, metrics=tmp / f"m/train_{out}.json", history=tmp / f"p/train_{out}.csv",
    )  # fmt: skip


def train_head(tmp: Path, bits: int = 16, sets: tuple[str, ...] = ()) -> int:
    return train.main(head_train_args(tmp, bits, sets))


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


@pytest.mark.parametrize(
    "setting", ["attack.snr_db=10", "attack.snr_db_sweep=[30, 5]", "attack.aux_size=30", "seed=5"]
)
def test_a_float_control_of_other_attack_settings_is_refused(
    study: Path, caplog, setting: str
) -> None:
    """The head's numbers stand beside the float control's: both must come from one attack
    setup. Which attacks run and the membership settings may differ (no float membership)."""
    assert attack.main(float_args(study)) == 0
    assert attack.main(head_args(study, (setting,))) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "the float control ran with other attack settings" in errors[0]
    assert "re-run attack-float@syn with these params" in errors[0]
    assert _no_output(study, "dpsh")


def test_settings_that_change_no_float_number_are_accepted(study: Path) -> None:
    """The sweep's order and the image sources' strength change nothing on an embeddings-only
    source: the head's attack runs against the same float control."""
    assert attack.main(float_args(study)) == 0
    sets = ("attack.snr_db_sweep=[10, 30, 20]", "attack.strength=0.25")
    assert attack.main(head_args(study, sets)) == 0


def test_membership_on_codes_only(study: Path) -> None:
    assert attack.main(float_args(study)) == 0
    sets = ("attack.attacks=[membership]", "attack.mi_score=code_stability")
    assert attack.main(head_args(study, sets)) == 0
    res = json.loads((study / "m/dpsh.json").read_text())
    assert 0.0 <= res["membership/auc"] <= 1.0 and res["membership/auc_baseline"] == 0.5
    assert res["membership/n_members"] == 40


def test_attack_on_dp_head_trains_dp_shadows(study: Path) -> None:
    """A DP-SGD head is attacked like any head; its membership shadows train with DP-SGD at the
    head's recorded guarantee (LiRA models the target's training procedure)."""
    from privacy.dp import DPReport

    dp_sets = ("dp.epochs=2", "dp.batch_size=64", "dp.methods=[csq]")
    assert train_dp.main(args(
        study, sets=dp_sets, dataset="syn", method="csq", bits=16, epsilon=8,
        embeddings=study / "syn.safetensors", out=study / "head_dp",
        metrics=study / "m/train_dp.json", history=study / "p/train_dp.csv",
    )) == 0  # fmt: skip
    head, config = attack.rebuild_head(study / "head_dp")
    context = attack.shadow_context(head, config)
    assert "train_shadow" in context  # a plain head's shadows use the trainer: no key
    assert "train_shadow" not in attack.shadow_context(*attack.rebuild_head(study / "head"))
    from hashers.base import EmbeddingSet

    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(40) % 3]
    cfg = dataclasses.replace(context["fit_config"], epochs=1)
    result = context["train_shadow"](context["make_head"](1), EmbeddingSet.from_numpy(x, y),
                                     EmbeddingSet.from_numpy(x, y), config=cfg)  # fmt: skip
    report = result[1]
    assert isinstance(report, DPReport)
    assert report.target_epsilon == config["dp"]["dp_target_epsilon"] == 8.0
    assert report.delta == config["dp"]["dp_delta"]
    assert report.max_grad_norm == config["dp"]["dp_max_grad_norm"]

    assert attack.main(float_args(study)) == 0
    assert attack.main(args(
        study, dataset="syn", method="csq", bits=16, embeddings=study / "syn.safetensors",
        head=study / "head_dp", gallery=study / "gallery.safetensors",
        float_metrics=study / "m/float.json", metrics=study / "m/csq_dp.json",
        sweep=study / "p/csq_dp.csv",
    )) == 0  # fmt: skip
    res = json.loads((study / "m/csq_dp.json").read_text())
    assert 0.0 <= res["membership/auc"] <= 1.0 and "linkage/test/top1_float" in res


def test_dp_shadow_trainer_needs_the_recorded_guarantee() -> None:
    from pipeline.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match="dp_delta, dp_max_grad_norm"):
        attack.dp_shadow_trainer({"dp_target_epsilon": 8.0, "dp_accountant": "prv"})


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
        (("attack.mi_score=codes",), "mi_score"),
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


WITHHOLD = ("attack.withhold_label=c1",)
DP_FAST = ("dp.epochs=2", "dp.batch_size=64", "dp.methods=[csq]", "dp.accountant=rdp")


def withheld_study(tmp: Path) -> str:
    """A 3-finding multi-label file under ``tmp`` (its fingerprint): c1 is held by exactly the
    rows of class 1 (a third of each split), c0 and c2 by half of each split."""
    emb = synthetic_embeddings(n=(160, 60, 60), dim=16, multilabel=True)
    y = {s: v.copy() for s, v in emb.y.items()}
    for v in y.values():
        v[np.arange(len(v)) % 3 != 1, 1] = 0
    save_embeddings(tmp / "syn.safetensors", EmbeddingsFile(x=emb.x, y=y, meta=emb.meta))
    return load_embeddings(tmp / "syn.safetensors").fingerprint


def test_withheld_label_train_evaluate_attack(tmp_path: Path, one_thread, caplog) -> None:
    """With attack.withhold_label set the head records the fingerprint of the file train read
    (not of the file less the withheld column) and the withheld column, so evaluate and attack
    accept it with the file dvc.yaml gives them; attack withholds the same column (the attribute
    attack predicts c1, the shadow heads train on c0 and c2) and refuses another setting."""
    fingerprint = withheld_study(tmp_path)
    emb_path = tmp_path / "syn.safetensors"
    assert train_head(tmp_path, sets=WITHHOLD) == 0
    cfg = json.loads((tmp_path / "head/config.json").read_text())
    assert cfg["embeddings"]["fingerprint"] == fingerprint
    assert cfg["embeddings"]["withheld_label"] == 1 and cfg["head_spec"]["n_classes"] == 2
    _, _, codes_meta = load_codes(tmp_path / "head/codes.safetensors")
    assert codes_meta["fingerprint"] == fingerprint and codes_meta["withheld_label"] == "1"

    assert knn.main(args(
        tmp_path, sets=WITHHOLD, dataset="syn", embeddings=emb_path, metrics=tmp_path / "m/knn.json",
        sweep=tmp_path / "p/knn.csv", confusion=tmp_path / "a/knn/confusion.png",
    )) == 0  # fmt: skip
    assert evaluate.main(args(
        tmp_path, sets=WITHHOLD, embeddings=emb_path, head=tmp_path / "head",
        float_metrics=tmp_path / "m/knn.json", metrics=tmp_path / "m/eval.json",
        sweep=tmp_path / "p/eval.csv", confusion=tmp_path / "a/eval/confusion.png",
    )) == 0  # fmt: skip
    ev = json.loads((tmp_path / "m/eval.json").read_text())
    assert ev["embeddings_fingerprint"] == fingerprint and ev["bits"] == 16

    assert attack.main(float_args(tmp_path, WITHHOLD)) == 0
    fl = json.loads((tmp_path / "m/float.json").read_text())
    # the attack stage refuses a head trained with another label withheld (before any attack)
    assert attack.main(head_args(tmp_path, ("attack.withhold_label=c2",))) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "label column 1 ('c1') withheld" in errors[0], errors
    assert "attack.withhold_label='c2' means label column 2 ('c2') withheld" in errors[0]
    assert _no_output(tmp_path, "dpsh")
    assert attack.main(head_args(tmp_path, WITHHOLD)) == 0
    res = json.loads((tmp_path / "m/dpsh.json").read_text())
    assert res["embeddings_fingerprint"] == fingerprint
    # the attribute attack predicts c1 (20 of 60 val and test rows): its prior-only baseline
    # guesses the aux majority 0, right for 40 of 60 test rows (c0 or c2 would give 30 of 60)
    assert res["attribute/test/accuracy_baseline"] == pytest.approx(40 / 60)
    assert res["attribute/test/accuracy_float"] == fl["attribute/test/accuracy"]
    assert 0.0 <= res["membership/auc"] <= 1.0 and res["bits"] == 16
    # a float control run without the withheld label predicts another finding: refused
    cheap = ("attack.attacks=[linkage, attribute]",)
    assert attack.main(float_args(tmp_path, cheap)) == 0
    caplog.clear()
    assert attack.main(head_args(tmp_path, (*WITHHOLD, *cheap))) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "float control ran with withheld_label=none" in errors[0], errors
    assert "this run withholds 1 (attack.withhold_label)" in errors[0]


def test_withheld_label_dp_head(tmp_path: Path, one_thread, caplog) -> None:
    """train_dp withholds attack.withhold_label as train does, so the attribute attack compares
    heads that never saw the finding; a DP head trained on every label is refused by the attack
    stage with the reason (it crashed on a shape mismatch in the shadow heads)."""
    fingerprint = withheld_study(tmp_path)

    def dp(out: str, sets: tuple[str, ...]) -> int:
        return train_dp.main(args(
            tmp_path, sets=(*DP_FAST, *sets), dataset="syn", method="csq", bits=16, epsilon=8,
            embeddings=tmp_path / "syn.safetensors", out=tmp_path / out,
            metrics=tmp_path / f"m/{out}.json", history=tmp_path / f"p/{out}.csv",
        ))  # fmt: skip

    def attack_dp(out: str, sets: tuple[str, ...]) -> int:
        return attack.main(args(
            tmp_path, sets=sets, dataset="syn", method="csq", bits=16,
            embeddings=tmp_path / "syn.safetensors", head=tmp_path / out,
            gallery=tmp_path / "gallery.safetensors", float_metrics=tmp_path / "m/float.json",
            metrics=tmp_path / f"m/at_{out}.json", sweep=tmp_path / f"p/at_{out}.csv",
        ))  # fmt: skip

    assert dp("dp_withheld", WITHHOLD) == 0
    cfg = json.loads((tmp_path / "dp_withheld/config.json").read_text())
    assert cfg["head_spec"]["n_classes"] == 2  # c1 hidden from DP-SGD training too
    assert cfg["embeddings"]["withheld_label"] == 1
    public = load_embeddings(tmp_path / "syn.safetensors").public_fingerprint  # a DP head's
    assert cfg["embeddings"]["public_fingerprint"] == public != fingerprint
    assert "fingerprint" not in cfg["embeddings"]
    assert attack.main(float_args(tmp_path, WITHHOLD)) == 0
    assert attack_dp("dp_withheld", WITHHOLD) == 0
    res = json.loads((tmp_path / "m/at_dp_withheld.json").read_text())
    assert 0.0 <= res["membership/auc"] <= 1.0 and "attribute/test/accuracy_float" in res

    assert dp("dp_all", ()) == 0
    assert json.loads((tmp_path / "dp_all/config.json").read_text())["head_spec"]["n_classes"] == 3
    caplog.clear()
    assert attack_dp("dp_all", WITHHOLD) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "trained with no label withheld" in errors[0], errors
    assert not (tmp_path / "m/at_dp_all.json").exists()


# --------------------------------------------------------------------------------------------
# the float control: checked against the embeddings, written all together
# --------------------------------------------------------------------------------------------

LINKAGE = ("attack.attacks=[linkage]",)


def test_float_control_from_other_embeddings_is_refused(study: Path, caplog) -> None:
    """The float numbers and the linkage gallery record the embeddings' fingerprint; the head's
    stage refuses either one made from other embeddings of the same layout."""
    fingerprint = load_embeddings(study / "syn.safetensors").fingerprint
    assert attack.main(float_args(study, LINKAGE)) == 0
    assert json.loads((study / "m/float.json").read_text())["embeddings_fingerprint"] == fingerprint
    _, _, meta = attack.load_gallery(study / "gallery.safetensors")
    assert meta["fingerprint"] == fingerprint
    save_embeddings(
        study / "other.safetensors", synthetic_embeddings(n=(160, 60, 60), dim=16, seed=5)
    )
    other = args(
        study, sets=LINKAGE, dataset="syn", embeddings=study / "other.safetensors",
        gallery=study / "other_gallery.safetensors", metrics=study / "m/other.json",
        sweep=study / "p/other.csv",
    )  # fmt: skip
    assert attack.main(other) == 0
    for swap, named in (
        (("m/float.json", "m/other.json"), "m/float.json"),
        (("gallery.safetensors", "other_gallery.safetensors"), "gallery.safetensors"),
    ):
        kept = (study / swap[0]).read_bytes()
        (study / swap[0]).write_bytes((study / swap[1]).read_bytes())
        caplog.clear()
        assert attack.main(head_args(study, LINKAGE)) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "\n" not in errors[0], errors
        assert errors[0].startswith(f"{study / named} was made from embeddings with fingerprint")
        assert "attack-float@syn" in errors[0]
        assert _no_output(study, "dpsh")
        (study / swap[0]).write_bytes(kept)
    assert attack.main(head_args(study, LINKAGE)) == 0


@pytest.mark.parametrize("damage", ["truncated", "missing_tensor", "no_strengths"])
def test_corrupt_gallery_one_line_exit_2(study: Path, caplog, damage: str) -> None:
    from safetensors.numpy import load_file, save_file

    assert attack.main(float_args(study, LINKAGE)) == 0
    path = study / "gallery.safetensors"
    _, _, meta = attack.load_gallery(path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    else:
        tensors = load_file(str(path))
        if damage == "missing_tensor":
            del tensors["test_0"]
        else:
            del meta["strengths"]
        save_file(tensors, str(path), metadata=meta)
    caplog.clear()
    assert attack.main(head_args(study, LINKAGE)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith(f"{path}: ")
    assert errors[0].endswith("re-run the attack-float@syn stage (dvc repro) to rebuild it")
    assert _no_output(study, "dpsh")
    # the stage the message names is dvc.yaml's (it named attack@syn-float, an MLflow run name)
    import yaml

    assert "attack-float" in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_unwritable_output_refused_before_any_attack(study: Path, caplog, monkeypatch) -> None:
    """A bad output path is refused before any attack runs; a failure while writing leaves none
    of the gallery, sweep and metrics (they land together)."""
    (study / "m/float.json").mkdir(parents=True)  # a folder where the metrics file goes
    ran = []
    monkeypatch.setattr(attack, "run_attacks", lambda *a: ran.append(1))
    assert attack.main(float_args(study, LINKAGE)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{study / 'm/float.json'}: an output file")
    assert not ran and not (study / "gallery.safetensors").exists()
    assert not (study / "p/float.csv").exists()
    monkeypatch.undo()
    (study / "m/float.json").rmdir()

    def broken(*a: object, **k: object) -> None:  # the metrics write fails (a full disk)
        from pipeline.artifacts import ArtifactError

        raise ArtifactError(f"{study / 'm/float.json'}: cannot write this output (disk full)")

    monkeypatch.setattr(attack.tracking, "record_metrics", broken)
    assert attack.main(float_args(study, LINKAGE)) == 2
    assert not (study / "gallery.safetensors").exists() and not (study / "p/float.csv").exists()
    assert not list(study.glob("**/.*.tmp"))  # no staged file left behind


# --------------------------------------------------------------------------------------------
# attacks on released codes (release_rr / release_kanon outputs)
# --------------------------------------------------------------------------------------------


def release(tmp: Path, mechanism: str, out: str, *, eps: float | None = None, head: str = "head",
            sets: tuple[str, ...] = ()) -> int:  # fmt: skip
    from pipeline import release as release_stage

    extra = ["--head", str(tmp / head), "--mechanism", mechanism, "--out", str(tmp / out)]
    extra += ["--metrics", str(tmp / f"m/{out}.json"), "--embeddings", str(tmp / "syn.safetensors")]
    if eps is not None:
        extra += ["--epsilon-code", str(eps)]
    return release_stage.main(args(tmp, *extra, sets=sets))


def released_args(tmp: Path, rel: str, name: str, sets: tuple[str, ...] = ()) -> list[str]:
    out = head_args(tmp, sets)
    out[out.index("--metrics") + 1] = str(tmp / f"m/{name}.json")
    out[out.index("--sweep") + 1] = str(tmp / f"p/{name}.csv")
    return [*out, "--release", str(tmp / rel)]


def test_attack_on_released_codes(study: Path) -> None:
    assert attack.main(float_args(study)) == 0
    assert attack.main(head_args(study)) == 0
    plain = json.loads((study / "m/dpsh.json").read_text())
    # ε = ∞: the release is the head's output, every number equals the unreleased one
    assert release(study, "rr", "rel_inf", eps=float("inf")) == 0
    assert attack.main(released_args(study, "rel_inf", "rr_inf")) == 0
    inf = json.loads((study / "m/rr_inf.json").read_text())
    assert inf["skipped.membership"].startswith("a code release mechanism does not change the head")
    same = {k: v for k, v in plain.items() if not k.startswith("membership/")}
    del same["embeddings_fingerprint"]
    assert {k: inf[k] for k in same} == same
    # ... but the release's numbers carry its public digest, not one of the released records
    rel_cfg = json.loads((study / "rel_inf/config.json").read_text())
    assert inf["embeddings_fingerprint"] == rel_cfg["embeddings"]["public_fingerprint"]
    assert inf["embeddings_fingerprint"].startswith("sha256-public:")  # train private
    assert plain["embeddings_fingerprint"] == load_embeddings(study / "syn.safetensors").fingerprint
    assert plain["linkage/train/top1"] >= 10 / 160  # the unreleased codes link (>= 10 x chance)
    # tiny ε: every released (train) bit is a coin flip, linkage falls to chance (1/160); seeded,
    # so that the bound below is checked on one fixed draw (with secret flips it would fail about
    # once in 3,000 runs)
    assert release(study, "rr", "rel_tiny", eps=0.01, sets=("release.seed=0",)) == 0
    assert attack.main(released_args(study, "rel_tiny", "rr_tiny")) == 0
    tiny = json.loads((study / "m/rr_tiny.json").read_text())
    assert set(tiny) == set(inf)  # regular names: the same keys as the unreleased file
    assert tiny["linkage/train/top1"] <= 5 / 160
    # only the database (train) codes are released by default: the test queries' codes are the
    # head's, so the attacker trains on clean aux codes for them and every test-group number is
    # the unreleased one (learned attacks included), while the train group's attribute inference
    # is trained on codes passed through the mechanism
    test_keys = [k for k in plain if k.split("/")[1:2] == ["test"] and k.split("/")[0] in
                 ("linkage", "inversion", "attribute")]  # fmt: skip
    assert len(test_keys) > 10 and {k: tiny[k] for k in test_keys} == {
        k: plain[k] for k in test_keys
    }
    assert tiny["attribute/train/auc"] != plain["attribute/train/auc"]
    sweep = (study / "p/rr_tiny.csv").read_text().splitlines()
    plain_sweep = (study / "p/dpsh.csv").read_text().splitlines()
    assert len(sweep) == 1 + 2 * 3  # both groups, once each
    assert [r for r in sweep if r.startswith("test,")] == [
        r for r in plain_sweep if r.startswith("test,")
    ]


def test_attack_on_k_anonymous_release(study: Path) -> None:
    assert attack.main(float_args(study)) == 0
    sets = ("release.k=40", "attack.attacks=[linkage,anonymity,attribute]")
    assert release(study, "kanon", "rel_k", sets=sets) == 0
    assert attack.main(released_args(study, "rel_k", "kanon", sets)) == 0
    res = json.loads((study / "m/kanon.json").read_text())
    assert res["anonymity/train/r0/k_min"] >= 40  # the train codes are the k-anonymous release
    # linkage by the code alone is bounded by 1/k: the >= k victims sharing a released code share
    # one ranking of the gallery, and the top slot's (tie-aware) probability sums to 1 over them
    assert res["linkage/train/top1"] <= 1 / 40 + 1e-9


def test_k_anonymous_attacker_snaps_each_split_onto_its_own_release(tmp_path: Path) -> None:
    """release.apply_to: both k-anonymises train and test each on its own; the attacker's snap
    (load_release) uses the same rule per split, so passing a split's true codes through the
    attacker's mechanism reproduces that split's release exactly. (The old attacker snapped onto
    train + test concatenated, whose holder counts are not a split's own: codes held by fewer
    than k records of a split but k or more overall were kept, and, on these codes, 23 of 60 test codes came out differently.)"""
    from hashers import registry
    from hashers.base import HeadSpec
    from pipeline import release as release_stage
    from pipeline.artifacts import save_codes, write_json
    from pipeline.config import AttackConfig
    from retrieval.codes import pack_bits, unpack_bits

    g = np.random.default_rng(1)
    centres = g.random((8, 6)) < 0.5
    true = {
        s: centres[g.integers(0, 8, n)] ^ (g.random((n, 6)) < 0.1)
        for s, n in (("train", 150), ("val", 40), ("test", 60))
    }
    head_dir, rel_dir = tmp_path / "head", tmp_path / "rel"
    packed = {s: pack_bits(b) for s, b in true.items()}
    save_codes(head_dir / "codes.safetensors", packed, n_bits=6, meta={"method": "lsh"})
    write_json(head_dir / "config.json", {"dataset": "syn", "method": "lsh"})
    sets = ("release.k=5", "release.apply_to=both")
    cli = ["--head", str(head_dir), "--mechanism", "kanon", "--out", str(rel_dir),
           "--metrics", str(tmp_path / "m/rel.json")]  # fmt: skip
    assert release_stage.main(args(tmp_path, *cli, sets=sets)) == 0
    head = registry.build("lsh", HeadSpec(in_dim=4, n_bits=6, n_classes=2), seed=0)
    cfg = {"dataset": "syn", "method": "lsh"}  # the head's config.json
    by_split, published, _ = attack.load_release(
        rel_dir, head_dir, head, cfg, 6, AttackConfig(), emb=None
    )
    assert set(by_split) == {"train", "test"}
    released = load_codes(rel_dir / "codes.safetensors")[0]
    changed = 0
    for split in ("train", "test"):
        assert np.array_equal(published[split], unpack_bits(released[split], 6))
        assert np.array_equal(by_split[split].mechanism(true[split]), published[split])
        changed += int((published[split] != true[split]).any(axis=1).sum())
    assert changed > 0  # the release did replace codes
    # the union rule would not reproduce it on this data (what the old attacker did)
    from privacy.release import snap_to_k_anonymous

    union = np.concatenate([published["train"], published["test"]])
    assert not np.array_equal(snap_to_k_anonymous(true["test"], union, 5), published["test"])


def _two_heads_and_a_release_of_b(tmp_path: Path, mechanism: str, config_b: dict):
    """Heads A and B (6-bit LSH codes of the same sizes, B's config ``config_b``) and B's release
    with ``release.apply_to: both``, so no split is left to compare codes on."""
    from pipeline import release as release_stage
    from pipeline.artifacts import save_codes, write_json
    from retrieval.codes import pack_bits

    heads = {}
    for name, seed, config in (("a", 1, {"dataset": "syn", "method": "lsh", "seed": 0}),
                               ("b", 2, config_b)):  # fmt: skip
        g = np.random.default_rng(seed)
        centres = g.random((8, 6)) < 0.5
        codes = {s: pack_bits(centres[g.integers(0, 8, n)] ^ (g.random((n, 6)) < 0.1))
                 for s, n in (("train", 150), ("val", 40), ("test", 60))}  # fmt: skip
        heads[name] = tmp_path / name
        save_codes(heads[name] / "codes.safetensors", codes, n_bits=6, meta={"method": "lsh"})
        write_json(heads[name] / "config.json", config)
    sets = ("release.k=5", "release.apply_to=both")
    cli = ["--head", str(heads["b"]), "--mechanism", mechanism, "--out", str(tmp_path / "rel"),
           "--metrics", str(tmp_path / "m/rel.json")]  # fmt: skip
    if mechanism == "rr":
        cli += ["--epsilon-code", "4"]
    assert release_stage.main(args(tmp_path, *cli, sets=sets)) == 0
    return heads["a"], tmp_path / "rel"


@pytest.mark.parametrize("mechanism", ["rr", "kanon"])
def test_a_release_of_another_head_is_refused_when_it_covers_every_split(
    tmp_path: Path, mechanism: str
) -> None:
    """Same method and bits, another seed: with train and test both released no code is left
    to compare, so the recorded head config is (before, such a release was attacked as this
    head's, and linkage fell toward chance, reading as protection)."""
    from hashers import registry
    from hashers.base import HeadSpec
    from pipeline.config import AttackConfig

    config_b = {"dataset": "syn", "method": "lsh", "seed": 1}
    head_a, rel = _two_heads_and_a_release_of_b(tmp_path, mechanism, config_b)
    head = registry.build("lsh", HeadSpec(in_dim=4, n_bits=6, n_classes=2), seed=0)
    cfg_a = {"dataset": "syn", "method": "lsh", "seed": 0}
    with pytest.raises(ArtifactError, match=r"made from another head: .* differs from .* in seed;"):
        attack.load_release(rel, head_a, head, cfg_a, 6, AttackConfig(), emb=None)


def test_a_k_anonymous_release_must_be_reproduced_by_this_heads_codes(tmp_path: Path) -> None:
    """Equal configs, other codes (e.g. a head trained again elsewhere): snapping this head's
    codes onto the release does not reproduce it, so it is refused."""
    from hashers import registry
    from hashers.base import HeadSpec
    from pipeline.config import AttackConfig

    cfg = {"dataset": "syn", "method": "lsh", "seed": 0}
    head_a, rel = _two_heads_and_a_release_of_b(tmp_path, "kanon", cfg)
    head = registry.build("lsh", HeadSpec(in_dim=4, n_bits=6, n_classes=2), seed=0)
    with pytest.raises(ArtifactError, match=r"its (train|test) codes are not this head's k=5"):
        attack.load_release(rel, head_a, head, cfg, 6, AttackConfig(), emb=None)


def test_released_codes_bad_input_exit_2(study: Path, caplog) -> None:
    assert attack.main(float_args(study)) == 0
    assert attack.main(released_args(study, "nowhere", "bad")) == 2
    assert "run the release_rr / release_kanon stage first" in caplog.text
    assert _no_output(study, "bad")
    # a release made from an 8-bit head handed to the 16-bit head's stage
    assert train.main(head_train_args(study, bits=8, out="head8")) == 0
    assert release(study, "rr", "rel8", eps=4.0, head="head8") == 0
    caplog.clear()
    assert attack.main(released_args(study, "rel8", "bad")) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "of 8 bits" in errors[0] and "--bits 16" in errors[0]
    assert _no_output(study, "bad")


def test_release_curve_rows_and_missing_input(tmp_path: Path) -> None:
    from pipeline import release_curve
    from pipeline.artifacts import write_json

    fp = {"embeddings_fingerprint": "sha256:" + "a" * 64}  # the float baseline's (knn.json)
    write_json(tmp_path / "knn.json", fp)

    def metrics(stem: str, acc: float, top1: float) -> None:
        write_json(
            tmp_path / f"ev/{stem}.json",
            {"balanced_accuracy": acc, "retention_balanced_accuracy": acc / 0.8, **fp},
        )
        write_json(tmp_path / f"at/{stem}.json", {**fp, **{f"linkage/{g}/top1{t}": top1 / (10 if t else 1)
                                                  for g in ("train", "test") for t in ("", "_baseline")}})  # fmt: skip

    for stem, acc, top1 in (
        ("lsh-16-rr1", 0.5, 0.01),
        ("lsh-16-rr4.0", 0.6, 0.1),  # ε as DVC may write it: "1" or "4.0"
        ("lsh-16-rr16", 0.7, 0.5),  # not in release.epsilons: left out
        ("lsh-16", 0.8, 0.9),
    ):
        metrics(stem, acc, top1)
    cli = args(
        tmp_path, "--name", "lsh-16",
        "--evaluate", str(tmp_path / "ev/lsh-16.json"), "--attack", str(tmp_path / "at/lsh-16.json"),
        "--evaluate-rr-dir", str(tmp_path / "ev"), "--attack-rr-dir", str(tmp_path / "at"),
        "--csv", str(tmp_path / "curve.csv"), "--float-metrics", str(tmp_path / "knn.json"),
        sets=("release.epsilons=[4, 1]",),
    )  # fmt: skip
    assert release_curve.main(cli) == 0
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["epsilon_code", "balanced_accuracy",
                                      "retention_balanced_accuracy", "linkage_train_top1"]  # fmt: skip
    assert [r.split(",")[:2] for r in rows[1:]] == [["1.0", "0.5"], ["4.0", "0.6"], ["inf", "0.8"]]
    (tmp_path / "at/lsh-16-rr4.0.json").unlink()
    (tmp_path / "curve.csv").unlink()
    assert release_curve.main(cli) == 2 and not (tmp_path / "curve.csv").exists()


# --------------------------------------------------------------------------------------------
# reconstruction on an image folder of mixed sizes and channel counts
# --------------------------------------------------------------------------------------------


def mixed_image_folder(root: Path) -> Path:
    """train/val/test folders; most images 12x10 RGB, some 16x14 RGB and some 12x10 grayscale."""
    from tests.pipeline.sources.test_source_imagefolder import write_png

    g = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("val", 12), ("test", 6)):
        for c, cls in enumerate(("benign", "malignant")):
            for i in range(per_class):
                size, mode = ((16, 14), "RGB") if i % 4 == 1 else ((12, 10), "RGB")
                if i % 4 == 3:
                    mode = "L"
                write_png(root / split / cls / f"{i}.png", int(40 + 120 * c + g.integers(0, 60)),
                          mode=mode, size=size)  # fmt: skip
    return root


def mixed_folder_sets(root: Path) -> tuple[str, ...]:
    """Params of the image-folder study ``mine``: the tiny random backbone, reconstruction only,
    images kept at their common size."""
    return (
        f"data.sources.mine={{kind: imagefolder, path: '{root}'}}",
        "data.datasets=[mine]",
        "backbone.name=tiny-random",
        "backbone.image_size=28",
        "attack.attacks=[reconstruction]",
        "attack.strength_sweep=[0.5]",
        "attack.reconstruction_size=null",
    )


@pytest.mark.usefixtures("hf_cache")
def test_reconstruction_on_mixed_size_image_folder(tmp_path: Path, one_thread) -> None:
    from pipeline import extract

    sets = mixed_folder_sets(mixed_image_folder(tmp_path / "imgs"))
    extract_args = ["--dataset", "mine", "--out", str(tmp_path / "emb.safetensors"),
                    "--metrics", str(tmp_path / "m/extract.json"), "--no-progress"]  # fmt: skip
    assert extract.main(args(tmp_path, *extract_args, sets=sets)) == 0
    cli = float_args(tmp_path, sets, dataset="mine", emb="emb.safetensors")
    assert attack.main(cli) == 0
    res = json.loads((tmp_path / "m/float.json").read_text())
    # the common size is the most frequent one (12x10 = H 10, W 12), 3 channels (most are RGB)
    assert res["reconstruction/image_height"] == 10 and res["reconstruction/image_width"] == 12
    assert res["reconstruction/image_channels"] == 3
    assert res["reconstruction/test/psnr"] > 0 and "reconstruction/test/ssim_baseline" in res


@pytest.mark.usefixtures("hf_cache")
def test_reconstruction_grid_draws_the_decoder_that_ran_on_test(
    tmp_path: Path, one_thread, monkeypatch
) -> None:
    """Under ``release.apply_to: database`` the train codes are released and the test codes are
    the head's, so two reconstruction attacks run (one per publication). The optional grid shows
    test victims: it must draw them with the decoder that ran (and was scored) on test, not with
    the one trained for the mechanism's train codes (it used to take the first one made)."""
    from pipeline import extract
    from pipeline import release as release_stage
    from privacy.reconstruction import Reconstruction

    sets = (*mixed_folder_sets(mixed_image_folder(tmp_path / "imgs")), "release.seed=0")
    emb = tmp_path / "emb.safetensors"
    assert extract.main(args(tmp_path, "--no-progress", sets=sets, dataset="mine", out=emb,
                             metrics=tmp_path / "m/extract.json")) == 0  # fmt: skip
    assert train.main(args(tmp_path, sets=sets, dataset="mine", method="dpsh", bits=16,
                           embeddings=emb, out=tmp_path / "head", metrics=tmp_path / "m/t.json",
                           history=tmp_path / "p/t.csv")) == 0  # fmt: skip
    assert attack.main(float_args(tmp_path, sets, dataset="mine", emb="emb.safetensors")) == 0
    rel = ["--head", str(tmp_path / "head"), "--mechanism", "rr", "--epsilon-code", "0.01",
           "--out", str(tmp_path / "rel"), "--metrics", str(tmp_path / "m/rel.json"),
           "--embeddings", str(emb)]  # fmt: skip
    assert release_stage.main(args(tmp_path, *rel, sets=sets)) == 0

    ran_on: dict[int, list[str]] = {}
    real_run, real_grid = Reconstruction.run, attack.save_reconstruction_grid

    def run(self, victims):  # type: ignore[no-untyped-def]
        ran_on.setdefault(id(self), []).extend(victims)
        return real_run(self, victims)

    drawn: list[int] = []

    def grid(path, attacks, victims):  # type: ignore[no-untyped-def]
        drawn.extend(id(a) for a in attacks if isinstance(a, Reconstruction))
        return real_grid(path, attacks, victims)

    monkeypatch.setattr(Reconstruction, "run", run)
    monkeypatch.setattr(attack, "save_reconstruction_grid", grid)
    cli = args(
        tmp_path, sets=(*sets, "attack.save_reconstructions=true"), dataset="mine",
        method="dpsh", bits=16, embeddings=emb, head=tmp_path / "head",
        gallery=tmp_path / "gallery.safetensors", float_metrics=tmp_path / "m/float.json",
        metrics=tmp_path / "m/rr.json", sweep=tmp_path / "p/rr.csv",
        reconstructions=tmp_path / "grid.png", release=tmp_path / "rel",
    )  # fmt: skip
    assert attack.main(cli) == 0
    assert sorted(ran_on.values()) == [["test"], ["train"]]  # one decoder per publication
    assert len(drawn) == 1 and ran_on[drawn[0]] == ["test"]
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_grid_claimed_where_no_reconstruction_ran(study: Path, caplog) -> None:
    """attack.save_reconstructions on an embeddings-only source: no decoder runs, so no grid is
    written, and the log must not claim patient images were written to --reconstructions (it
    did, for a file that did not exist)."""
    grid = study / "grid.png"
    cli = [
        *float_args(study, ("attack.save_reconstructions=true",)),
        "--reconstructions",
        str(grid),
    ]
    assert attack.main(cli) == 0
    assert not grid.exists()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "reconstructed patient images written" in m], messages
    assert any("no grid written to" in m and str(grid) in m for m in messages), messages


def test_common_images_stated_size_and_native_arrays_untouched() -> None:
    mixed = {"train": [np.zeros((10, 12, 3), np.uint8), np.full((14, 16), 200, np.uint8)],
             "val": np.zeros((3, 10, 12, 3), np.uint8)}  # fmt: skip
    out, shape = attack.common_images(mixed, (8, 8))
    assert (
        shape == (8, 8, 3)
        and out["train"].shape == (2, 8, 8, 3)
        and out["val"].shape == (3, 8, 8, 3)
    )
    assert (out["train"][1] == 200).all()  # a flat gray image stays flat gray in RGB
    same, shape = attack.common_images({"val": mixed["val"]}, None)
    assert shape == (10, 12, 3) and same["val"] is mixed["val"]  # nothing to resize: untouched


@pytest.mark.parametrize("mechanism", ["rr", "kanon"])
def test_a_release_publishes_no_digest_of_the_released_records(
    study: Path, mechanism: str, caplog
) -> None:
    """The release copied the head's config.json and codes metadata, both holding the SHA-256 of
    every embedding: an adversary who knows all records but one recomputes it per candidate and
    learns the target's record outright, whatever ε_code protects its code. The release now
    records a public fingerprint that leaves out the released splits (train and test here), and
    the attack stage still ties the release to its head and embeddings."""
    import numpy as np

    from pipeline.artifacts import EmbeddingsFile, check_head_embeddings, load_embeddings

    eps = 4.0 if mechanism == "rr" else None
    both = ("release.apply_to=both", "release.k=5")
    assert release(study, mechanism, "rel_both", eps=eps, sets=both) == 0
    emb = load_embeddings(study / "syn.safetensors")
    cfg = json.loads((study / "rel_both/config.json").read_text())
    _, _, meta = load_codes(study / "rel_both/codes.safetensors")
    public = cfg["embeddings"]["public_fingerprint"]
    assert "fingerprint" not in cfg["embeddings"] and public == meta["fingerprint"]
    assert public.startswith("sha256-public(test,train):")
    text = (study / "rel_both/config.json").read_text() + json.dumps(meta)
    assert emb.fingerprint not in text and emb.fingerprint.split(":")[1] not in text
    # neighbouring datasets (a train or a test record replaced) give the same published digest;
    # other val rows (copied unreleased, the attacker's auxiliary split) do not
    x = {s: np.array(v) for s, v in emb.x.items()}
    for split, same in (("train", True), ("test", True), ("val", False)):
        changed = {**x, split: x[split].copy()}
        changed[split][0] += 1.0
        other = EmbeddingsFile(changed, emb.y, dict(emb.meta))
        assert (other.digest_like(public) == public) is same, split
    check_head_embeddings(cfg, emb, head_dir=study / "rel_both", embeddings_path=study)
    assert attack.main(float_args(study)) == 0
    assert attack.main(released_args(study, "rel_both", "rel_both")) == 0
    # the head records a fingerprint: without its embeddings file the release is refused
    caplog.clear()
    rel_args = ["--head", str(study / "head"), "--mechanism", mechanism, "--out",
                str(study / "rel_none"), "--metrics", str(study / "m/rel_none.json")]  # fmt: skip
    rel_args += [] if eps is None else ["--epsilon-code", "4"]
    from pipeline import release as release_stage

    assert release_stage.main(args(study, *rel_args)) == 2
    assert "--embeddings:" in caplog.text and not (study / "rel_none").exists()


@pytest.mark.usefixtures("hf_cache")
def test_gallery_backbone_must_be_that_of_the_extract_and_images_are_reloaded_as_extracted(
    tmp_path: Path, one_thread, caplog
) -> None:
    """attack-float re-embeds perturbed victims with ``params.backbone``: another image size put
    the gallery in another space (linkage at chance, exit 0), so it is refused, naming the key and
    the fix. Images are reloaded with the ``seed``/``data.limit`` the extract recorded: with
    another seed the subsample held other records' images under the same label sequence."""
    import yaml

    from pipeline import extract
    from pipeline.artifacts import load_embeddings
    from pipeline.config import load_params

    sets = (*mixed_folder_sets(mixed_image_folder(tmp_path / "imgs")), "data.limit=20")
    extract_args = ["--dataset", "mine", "--out", str(tmp_path / "emb.safetensors"),
                    "--metrics", str(tmp_path / "m/extract.json"), "--no-progress"]  # fmt: skip
    assert extract.main(args(tmp_path, *extract_args, sets=sets)) == 0
    for extra, needle in (
        ("backbone.image_size=56", "backbone.image_size: '56' now, '28' at extract"),
        ("backbone.pooling=cls_mean", "backbone.pooling: 'cls_mean' now, 'cls' at extract"),
    ):
        caplog.clear()
        cli = float_args(tmp_path, (*sets, extra), dataset="mine", emb="emb.safetensors")
        assert attack.main(cli) == 2, extra
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and needle in errors[0], errors
        assert (
            not (tmp_path / "m/float.json").exists()
            and not (tmp_path / "gallery.safetensors").exists()
        )
    # another seed: the images of the extract's rows, not those seed 1 would subsample
    emb = load_embeddings(tmp_path / "emb.safetensors")
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in (*FAST, *sets))}
    at = {seed: load_params(REPO / "params.yaml", {**overrides, "seed": seed}) for seed in (0, 1)}
    as_extracted = attack.load_images(at[0], "mine", emb)
    reloaded = attack.load_images(at[1], "mine", emb)
    naive = attack.sources.load("mine", at[1].data.source("mine"), at[1].data, seed=1)
    naive_train = naive.splits["train"].get_batch(np.arange(len(naive.splits["train"])))
    assert len(naive_train) == len(as_extracted["train"]) == 20
    assert any(
        not np.array_equal(a, b) for a, b in zip(naive_train, as_extracted["train"], strict=True)
    )
    for split in ("train", "val", "test"):
        assert len(reloaded[split]) == len(as_extracted[split]) == len(emb.y[split])
        assert all(
            np.array_equal(a, b) for a, b in zip(reloaded[split], as_extracted[split], strict=True)
        )
    # the stage: data.limit (seed=1 would also change the tiny-random backbone, whose revision
    # records its seed, so the gallery check would refuse it). Linkage only: the constant-colour
    # fixture makes val row 5 a copy of a test image, which leaves aux one row short of
    # reconstruction's 20 (pipeline.attack.build_records)
    caplog.clear()
    caplog.set_level("INFO")
    sets_here = (*sets, "data.limit=null", "attack.attacks=[linkage]")
    cli = float_args(tmp_path, sets_here, dataset="mine", emb="emb.safetensors")
    assert attack.main(cli) == 0
    assert (
        "reloading the images with the extract's seed=0, data.limit=20 (these params say seed=0, data.limit=None)"
        in caplog.text
    )


@pytest.mark.usefixtures("hf_cache")
def test_an_image_replaced_since_extract_is_refused_not_reloaded(
    tmp_path: Path, one_thread, caplog
) -> None:
    """The attack reloads the images beside the embeddings' rows; an image file rewritten since
    extract under the same name and class kept counts and labels, so the gallery and the
    reconstruction targets silently held another image for that row."""
    import yaml

    from pipeline import extract
    from pipeline.artifacts import load_embeddings
    from pipeline.config import load_params
    from pipeline.data import IMAGES_DIGEST_KEY, ImagesDigest
    from tests.pipeline.sources.test_source_imagefolder import write_png

    root = mixed_image_folder(tmp_path / "imgs")
    sets = mixed_folder_sets(root)
    extract_args = ["--dataset", "mine", "--out", str(tmp_path / "emb.safetensors"),
                    "--metrics", str(tmp_path / "m/extract.json"), "--no-progress"]  # fmt: skip
    assert extract.main(args(tmp_path, *extract_args, sets=sets)) == 0
    emb = load_embeddings(tmp_path / "emb.safetensors")
    recorded = json.loads(emb.meta[IMAGES_DIGEST_KEY])
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in (*FAST, *sets))}
    params = load_params(REPO / "params.yaml", overrides)
    images = attack.load_images(params, "mine", emb)  # unchanged source: accepted
    for split in ("train", "val", "test"):
        digest = ImagesDigest()  # the digest is of the images in row order, batching aside
        digest.update(list(images[split]))
        assert digest.hexdigest() == recorded[split]
    write_png(root / "test" / "malignant" / "2.png", 3)  # same name, class and size; new pixels
    with pytest.raises(attack.ArtifactError, match=r"the test images the source holds now"):
        attack.load_images(params, "mine", emb)
    caplog.clear()
    assert attack.main(float_args(tmp_path, sets, dataset="mine", emb="emb.safetensors")) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "re-run the extract stage" in errors[0], errors
    assert not (tmp_path / "m/float.json").exists()


def test_train_copies_read_the_extract_s_duplicate_rows() -> None:
    from pipeline.artifacts import ArtifactError
    from pipeline.attack import train_copies

    emb = synthetic_embeddings()  # 90 rows per split, no duplicate_rows: unknown
    assert train_copies(emb, "test") is None
    rows = {"train": {"test": [5], "val": [0]}, "test": {"train": [2, 89]}, "val": {"train": [7]}}
    emb = dataclasses.replace(emb, meta={**emb.meta, "duplicate_rows": json.dumps(rows)})
    assert np.flatnonzero(train_copies(emb, "test")).tolist() == [2, 89]
    assert np.flatnonzero(train_copies(emb, "val")).tolist() == [7]
    assert not train_copies(emb, "train").any()  # a training record is a member either way
    bad = dataclasses.replace(emb, meta={**emb.meta, "duplicate_rows": '{"test": {"train": [90]}}'})
    with pytest.raises(ArtifactError, match=r"duplicate_rows is not a JSON object of row lists"):
        train_copies(bad, "test")
