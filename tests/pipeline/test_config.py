"""params.yaml validation: every problem names its key and the allowed values."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load_with_resolved_types() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.knn.k == 7 and p.train.bits == (12, 24, 36, 48)
    assert p.data.source("breastmnist").flag == "breastmnist"
    assert isinstance(p.train.lr, float)
    assert p.method_config("dpsh").eta == pytest.approx(0.1)


def test_selection_defaults_agree_in_params_and_config_and_dp_pins_its_own() -> None:
    """train.selection is balanced_soft_accuracy (bench/RESULTS-utility-val.md); DP heads pin the
    score their schedule was chosen with (dp.selection) whatever train.selection says, and null
    falls back to train.selection."""
    from pipeline.config import DPParams, TrainConfig
    from pipeline.train_dp import dp_fit_config

    p = load_params(REPO / "params.yaml")
    assert p.train.selection == TrainConfig().selection == "balanced_soft_accuracy"
    assert p.dp.selection == DPParams().selection == "balanced_soft_accuracy"
    ranked = load_params(REPO / "params.yaml", {"train.selection": "balanced_map"})
    assert dp_fit_config(ranked, progress=False).selection == "balanced_soft_accuracy"
    inherit = load_params(
        REPO / "params.yaml", {"train.selection": "balanced_map", "dp.selection": None}
    )
    assert dp_fit_config(inherit, progress=False).selection == "balanced_map"


SEED_RANGE = r"is out of range; use an integer from 0 to 2\*\*63 - 1 = 9223372036854775807"


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("train.epocs", 3, r"train: unknown key 'epocs' \(did you mean 'epochs'\?\)"),
        (
            "train.bits",
            [12, 4],
            r"train.bits\[1\]: 4 bits is out of range; use a code length from 8 to 1024",
        ),
        ("train.bits", [2048], r"train.bits\[0\]: 2048 bits"),
        ("train.bits", [], r"train.bits: list at least one code length, e.g. \[12, 24"),
        ("knn.ci_resamples", 2, r"knn.ci_resamples: 2 resamples are too few for a 0.95 interval"),
        ("knn.ci_resamples", 399, r"use 0 \(no interval\) or at least 400 \(default 2000\)"),
        ("dp.methods", ["csqq"], r"dp.methods\[0\]: unknown hashing method 'csqq'; registered:"),
        ("dp.methods", ["csq", "dpsh"], r"dp.methods\[1\]: dpsh cannot train under DP: its loss"),
        ("dp.methods", ["itq"], r"dp.methods\[0\]: itq is fitted in closed form"),
        ("train.epochs", "ten", r"train.epochs: expected an integer, got 'ten'"),
        ("train.selection_window", 4, r"train.selection_window: 4 must be an odd number"),
        ("dp.selection", "map", r"dp.selection: expected 'balanced_soft_accuracy' \| .* or null"),
        ("train.ema_epochs", -1.0, r"train.ema_epochs: -1.0 must be 0 \(no weight averaging\)"),
        ("train.geometry", -0.5, r"train.geometry: -0.5 must be 0 \(the method's own loss\)"),
        (
            "retrieval.backend",
            "annoy",
            r"retrieval.backend: 'annoy' is not allowed; use one of 'exact'",
        ),
        (
            "backbone.resize",
            "crop",
            r"backbone.resize: 'crop' is not allowed; use one of 'resize', 'pad'",
        ),
        ("data.limit", 0, r"data.limit: 0 must be a positive integer or null"),
        (
            "data.datasets",
            ["breastmnsit"],
            r"unknown dataset 'breastmnsit' \(did you mean 'breastmnist'\?\)",
        ),
        (
            "data.sources.x",
            {"kind": "medmnist", "size": 32},
            r"data.sources.x.size: 32 is not a MedMNIST size",
        ),
        (
            "data.sources.y",
            {"kind": "huggingface"},
            r"data.sources.y.id: a huggingface source needs the dataset id",
        ),
        (
            "data.sources.cifar10",
            {"kind": "huggingface", "id": "uoft-cs/cifar10", "size": 224},
            r"data.sources.cifar10.size: the huggingface source does not read size \(it reads "
            r"kind, id, revision, image_column, label_column\); remove size: 224",
        ),
        (
            "data.sources.z",
            {"kind": "imagefolder", "path": "/data", "label_column": "y"},
            r"data.sources.z.label_column: the imagefolder source does not read label_column",
        ),
        (
            "data.sources.breastmnist",
            {"kind": "medmnist", "path": "/data/b.npz"},
            r"data.sources.breastmnist.path: the medmnist source does not read path",
        ),
        (
            "data.sources.breastmnist",
            {"kind": "embeddings", "path": "/e.npz", "flag": "breastmnist"},
            r"data.sources.breastmnist.flag: the embeddings source does not read flag",
        ),
        (
            "data.sources.breastmnist",
            {"kind": "medmnist", "flag": "mybreast"},
            r"data.sources.breastmnist.flag: 'mybreast' is not a MedMNIST 2D dataset",
        ),
        (
            "train.methods",
            ["dpsh", "nope"],
            r"train.methods\[1\]: unknown hashing method 'nope'; registered: .*dpsh",
        ),
        (
            "methods.dpsh",
            {"etta": 1.0},
            r"methods.dpsh: unknown key 'etta' \(did you mean 'eta'\?\)",
        ),
        ("methods.dpsh", {"eta": -1.0}, r"methods.dpsh.eta: -1.0 must be >= 0"),
        ("methods.nope", {}, r"methods.nope: no hashing method is registered as 'nope'"),
        ("knn.k", 0, r"knn.k: 0 must be >= 1"),
        ("dp.patience", 10, r"dp: unknown key 'patience'"),  # DP heads never stop early
        ("seed", True, r"seed: expected an integer, got True"),
        # 2**64 passed and then crashed torch.manual_seed with a bare ValueError in a stage
        ("seed", 2**64, rf"^seed: {2**64} {SEED_RANGE}$"),
        ("seed", -1, rf"^seed: -1 {SEED_RANGE}$"),
        ("attack.seed", 2**63, rf"^attack.seed: {2**63} {SEED_RANGE}$"),
        # a method's own seed (the LSH hyperplanes, ITQ/PCA rotations) follows the same rule
        ("methods.lsh", {"seed": 2**64}, rf"^methods.lsh.seed: {2**64} {SEED_RANGE}$"),
        ("methods.itq", {"seed": -1}, rf"^methods.itq.seed: -1 {SEED_RANGE}$"),
        ("dp.seed", 2**64, rf"^dp.seed: {2**64} {SEED_RANGE} \(or null = secret OS entropy\)$"),
        ("release.seed", -1, rf"^release.seed: -1 {SEED_RANGE} \(or null = secret OS entropy\)$"),
        ("tracking.enabled", "yes", r"tracking.enabled: expected true or false"),
        # the retrieval block's own checks named "retrieval.retrieval.<key>"
        ("retrieval.metrics", ["mapp"], r"^retrieval.metrics\[0\]: unknown metric 'mapp'"),
        ("retrieval.map_at", [0], r"^retrieval.map_at\[0\]: 0 must be >= 1$"),
        ("retrieval.hnsw_m", 0, r"^retrieval.hnsw_m: 0 must be >= 1$"),
        # a repeated cut-off was scored twice into one metric (map_at_10 = 2.0)
        ("retrieval.map_at", [10, 1000, 10], r"^retrieval.map_at\[2\]: 10 is listed twice"),
        ("retrieval.precision_at", [5, 5], r"^retrieval.precision_at\[1\]: 5 is listed twice"),
        # a matrix axis naming a value twice made two DVC stages (eps8, eps8.0) and two report
        # rows of one ε; a stale file of the other spelling was then picked silently
        (
            "dp.epsilons",
            [8, 1, 8.0],
            r"^dp.epsilons\[2\]: 8.0 is listed twice \(entry 0 too; 8 and 8.0 are one value\)",
        ),
        ("release.epsilons", [4.0, 4], r"^release.epsilons\[1\]: 4.0 is listed twice"),
        # strength i of the train split drew seed offset i and the test split 500 + i: shared
        (
            "attack.strength_sweep",
            [i / 1000 for i in range(600)],
            r"^attack.strength_sweep: 600 distinct strengths \(with attack.strength\); at most 500",
        ),
        (
            "attack.snr_db_sweep",
            [100 + i / 10 for i in range(501)],
            r"^attack.snr_db_sweep: 502 distinct SNRs \(with attack.snr_db\); at most 500",
        ),
        # an attack listed twice ran twice (membership: twice the shadow heads), keys overwritten
        (
            "attack.attacks",
            ["linkage", "linkage"],
            r"^attack.attacks\[1\]: 'linkage' is listed twice",
        ),
        ("knn.k_sweep", [5, 5], r"^knn.k_sweep\[1\]: 5 is listed twice"),
        (
            "retrieval.metrics",
            ["map_all", "map_all"],
            r"^retrieval.metrics\[1\]: 'map_all' is listed",
        ),
        ("train.lr", 10**400, r"^train.lr: expected a finite number, got an integer too large$"),
        # a DP target of ∞ would train with Opacus' starting σ = 10 (privacy.dp refuses it too)
        (
            "dp.epsilons",
            [8, float("inf")],
            r"^dp.epsilons\[1\]: expected a finite number, got inf$",
        ),
        ("train.bits", [12, 48, 12], r"^train.bits\[2\]: 12 is listed twice .*list each once$"),
        ("train.methods", ["dpsh", "csq", "dpsh"], r"^train.methods\[2\]: 'dpsh' is listed twice"),
        ("dp.methods", ["csq", "csq"], r"^dp.methods\[1\]: 'csq' is listed twice"),
        (
            "data.datasets",
            ["breastmnist"] * 2,
            r"^data.datasets\[1\]: 'breastmnist' is listed twice",
        ),
    ],
)
def test_bad_params_name_key_and_fix(dotted: str, value: object, message: str) -> None:
    tree = raw()
    node = tree
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(tree)


@pytest.mark.parametrize("key", ["seed", "attack.seed", "dp.seed", "release.seed"])
def test_seed_range_ends_below_2_63_and_null_means_os_entropy(key: str) -> None:
    tree = raw()
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = 2**63 - 1
    assert parse_params(tree)
    node[last] = 2**63
    with pytest.raises(ParamsError, match=rf"^{re.escape(key)}: {2**63} {SEED_RANGE}"):
        parse_params(tree)
    node[last] = None
    if key in ("dp.seed", "release.seed"):
        assert getattr(getattr(parse_params(tree), parents[0]), last) is None
    else:
        with pytest.raises(ParamsError, match=rf"^{re.escape(key)}: expected an integer"):
            parse_params(tree)


def test_dataset_names_must_start_with_a_letter_or_digit() -> None:
    """'..' matched [A-Za-z0-9_.]+: artifacts/heads/../dpsh-12 left the heads folder."""
    for name, ok in [
        ("..", False), (".", False), (".hidden", False), ("_x", False), ("..breastmnist", False),
        ("b", True), ("7x", True), ("chest_xray_v2", True), ("chest_xray.v2", False),
        ("a.b", False),  # dvc.yaml reads data.sources.${item.dataset}: DVC looked up data.sources.a.b
    ]:  # fmt: skip
        tree = raw()
        tree["data"]["sources"][name] = {"kind": "embeddings", "path": "x.npz"}
        tree["data"]["datasets"] = [name]
        if ok:
            assert parse_params(tree).data.datasets == (name,)
            continue
        with pytest.raises(
            ParamsError,
            match=rf"^data.datasets\[0\]: {re.escape(repr(name))} must start with a letter or "
            r"digit and hold only letters, digits and '_' \(it names files, DVC stages and the DVC "
            r"params key data\.sources\.<name>",
        ):
            parse_params(tree)


def test_medmnist_dataset_without_a_flag_is_refused_when_params_are_read() -> None:
    tree = raw()
    tree["data"]["sources"]["mybreast"] = {"kind": "medmnist"}
    tree["data"]["datasets"] = ["mybreast"]
    with pytest.raises(
        ParamsError,
        match=r"^data.sources.mybreast.flag: 'mybreast' is not a MedMNIST flag; set flag",
    ):
        parse_params(tree)
    tree["data"]["sources"]["mybreast"]["flag"] = "breastmnist"
    assert parse_params(tree).data.source("mybreast").flag == "breastmnist"


def test_unknown_top_level_section() -> None:
    tree = raw()
    tree["trian"] = {}
    with pytest.raises(ParamsError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        parse_params(tree)


def test_overrides_and_missing_file(tmp_path: Path) -> None:
    p = load_params(REPO / "params.yaml", {"train.epochs": 3, "backbone.name": "tiny-random"})
    assert p.train.epochs == 3 and p.backbone.name == "tiny-random"
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_every_method_has_a_params_block_and_every_block_a_method() -> None:
    from hashers import registry

    p = load_params(REPO / "params.yaml")
    assert set(p.methods) == set(registry.names())
    blocks = raw()["methods"]
    for name in registry.names():
        # the repository's params.yaml documents each method's defaults, every field spelt out
        assert p.method_config(name) == registry.get(name).Config(), name
        fields = {f.name for f in dataclasses.fields(registry.get(name).Config)}
        assert set(blocks[name] or {}) == fields, name


def test_max_steps_must_be_positive_or_null() -> None:
    with pytest.raises(ParamsError, match=r"train\.max_steps"):
        load_params(REPO / "params.yaml", {"train.max_steps": 0})
    assert load_params(REPO / "params.yaml", {"train.max_steps": None}).train.max_steps is None


def test_dvc_train_stage_tracks_every_training_key() -> None:
    """A train.* key missing from dvc.yaml would change results without re-running the stage."""
    from pipeline.config import TrainConfig

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    tracked = {p for p in stage["params"] if isinstance(p, str)}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("methods", "bits"):  # matrix axes: each value is its own stage
            continue
        assert f"train.{f.name}" in tracked, f"dvc.yaml train stage misses train.{f.name}"
    assert "methods.${item.method}" in tracked


def test_the_unknown_dataset_example_is_one_the_params_accept() -> None:
    """The fix suggested for an unknown dataset must work as written: its example was
    ``breastmnst: {kind: medmnist, size: 28}``, refused next as 'breastmnst' is no MedMNIST flag."""
    tree = raw()
    tree["data"]["datasets"] = ["breastmnst"]
    with pytest.raises(ParamsError) as err:
        parse_params(tree)
    assert "{kind: medmnist, flag: <a MedMNIST flag, e.g. breastmnist>, size: 28}" in str(err.value)
    tree["data"]["sources"]["breastmnst"] = {"kind": "medmnist", "flag": "breastmnist", "size": 28}
    assert parse_params(tree).data.datasets == ("breastmnst",)
