"""Stages train_dp -> release -> evaluate on tiny synthetic embeddings; bad input exits 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipeline import evaluate, knn, release, train, train_dp
from pipeline.artifacts import load_codes, load_head, save_embeddings
from pipeline.synthetic import synthetic_embeddings
from retrieval.codes import unpack_bits
from tests.conftest import REPO

BASE = [
    "--params",
    str(REPO / "params.yaml"),
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.val_queries=60",
    "--set",
    "tracking.enabled=false",
    "--set",
    "dp.accountant=rdp",
    "--set",
    "dp.epochs=2",
    "--set",
    "dp.batch_size=64",
]


def run_knn(tmp_path: Path, emb_path: Path) -> int:
    """The float KNN stage on ``emb_path`` (evaluate reads its metrics)."""
    return knn.main([
        *BASE, "--dataset", "syn", "--embeddings", str(emb_path),
        "--metrics", str(tmp_path / "m/knn.json"), "--sweep", str(tmp_path / "p/knn.csv"),
        "--confusion", str(tmp_path / "a/knn/c.png"),
    ])  # fmt: skip


def dp_args(tmp: Path, emb: Path, *, method: str = "csq", eps: str = "8") -> list[str]:
    return [
        *BASE,
        "--dataset",
        "syn",
        "--method",
        method,
        "--bits",
        "12",
        "--epsilon",
        eps,
        "--embeddings",
        str(emb),
        "--out",
        str(tmp / "a/head_dp"),
        "--metrics",
        str(tmp / "m/train_dp.json"),
        "--history",
        str(tmp / "p/train_dp.csv"),
    ]


@pytest.fixture
def emb_path(tmp_path: Path) -> Path:
    path = tmp_path / "emb.safetensors"
    save_embeddings(path, synthetic_embeddings())
    return path


@pytest.mark.slow  # ~30 s on a shared CPU: Opacus import + RDP calibration + 4 stages
def test_train_dp_release_and_evaluate(tmp_path: Path, emb_path: Path) -> None:
    assert train_dp.main(dp_args(tmp_path, emb_path)) == 0
    m = json.loads((tmp_path / "m/train_dp.json").read_text())
    assert 7.0 < m["dp_epsilon"] <= 8.0 and m["dp_delta"] == pytest.approx(0.1 / 300)
    assert m["dp_target_epsilon"] == 8.0 and m["dp_noise_multiplier"] > 0
    rows = list(csv.DictReader((tmp_path / "p/train_dp.csv").open()))
    assert len(rows) == 2 and float(rows[0]["dp_epsilon"]) < float(rows[1]["dp_epsilon"])
    state, cfg = load_head(tmp_path / "a/head_dp")
    assert cfg["dp"]["dp_epsilon"] == m["dp_epsilon"] and "centers" in state

    for mech, extra in (("rr", ["--epsilon-code", "4"]), ("kanon", [])):
        out = tmp_path / f"a/rel_{mech}"
        code = release.main(
            [
                *BASE,
                "--set",
                "release.k=20",
                "--head",
                str(tmp_path / "a/head_dp"),
                "--mechanism",
                mech,
                *extra,
                "--out",
                str(out),
                "--metrics",
                str(tmp_path / f"m/rel_{mech}.json"),
                "--embeddings",
                str(emb_path),
            ]
        )
        assert code == 0
        before, n_bits, _ = load_codes(tmp_path / "a/head_dp/codes.safetensors")
        after, _, _ = load_codes(out / "codes.safetensors")
        assert (after["test"] == before["test"]).all()  # apply_to: database (train) only
        figures = json.loads((tmp_path / f"m/rel_{mech}.json").read_text())
        released = json.loads((out / "config.json").read_text())["embeddings"]
        assert figures["embeddings_fingerprint"] == released["public_fingerprint"]
        if mech == "rr":
            assert 0.2 < figures["train/share_bits_flipped"] < 0.5  # 1/(1+e^(4/12)) = 0.417
        else:
            assert figures["train/min_anonymity_after"] >= 20
            import numpy as np

            _, counts = np.unique(unpack_bits(after["train"], n_bits), axis=0, return_counts=True)
            assert counts.min() >= 20
    common = [*BASE, "--dataset", "syn", "--method", "csq", "--bits", "12"]
    assert run_knn(tmp_path, emb_path) == 0
    assert (
        evaluate.main(
            [
                *common,
                "--embeddings",
                str(emb_path),
                "--head",
                str(tmp_path / "a/rel_rr"),
                "--float-metrics",
                str(tmp_path / "m/knn.json"),
                "--metrics",
                str(tmp_path / "m/eval_rr.json"),
                "--sweep",
                str(tmp_path / "p/eval_rr.csv"),
                "--confusion",
                str(tmp_path / "a/eval_rr/c.png"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "m/eval_rr.json").read_text())
    assert 0.0 <= evaluated["accuracy"] <= 1.0
    # the release's metrics carry the digest its config records (train private: a DP head; the
    # released train codes), never the content fingerprint of every record
    from pipeline.artifacts import load_embeddings

    rel_cfg = json.loads((tmp_path / "a/rel_rr/config.json").read_text())
    assert evaluated["embeddings_fingerprint"] == rel_cfg["embeddings"]["public_fingerprint"]
    assert evaluated["embeddings_fingerprint"].startswith("sha256-public:")  # train private
    assert evaluated["embeddings_fingerprint"] != load_embeddings(emb_path).fingerprint


def test_dp_epsilon_history_in_mlflow_once_per_epoch(
    tmp_path: Path, emb_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's dp_epsilon history holds the ε spent after each epoch, one value per step, its
    last the final ε of the metrics JSON: the summary does not log it again at step 0."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = ["--set", "tracking.enabled=true", "--set", f"tracking.uri={uri}"]
    assert train_dp.main([*dp_args(tmp_path, emb_path), *tracked, "--set", "dp.epochs=3"]) == 0
    m = json.loads((tmp_path / "m/train_dp.json").read_text())
    rows = list(csv.DictReader((tmp_path / "p/train_dp.csv").open()))
    assert m["epochs_run"] == len(rows) == 3
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hashaudit").experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "dp_epsilon"), key=lambda h: h.step)
    assert [h.step for h in history] == [0, 1, 2]
    assert [h.value for h in history] == pytest.approx([float(r["dp_epsilon"]) for r in rows])
    assert history[-1].value == pytest.approx(m["dp_epsilon"])
    assert run.data.metrics["dp_delta"] == pytest.approx(m["dp_delta"])  # the rest: once, step 0
    # no un-noised training number: no loss column in the CSV, no loss metric in MLflow
    assert not [k for k in rows[0] if k.startswith("loss")], rows[0]
    assert not [k for k in run.data.metrics if k.startswith("loss")], run.data.metrics
    # dp.seed: null (default) -> secret randomness, recorded nowhere
    dp_params = {k: v for k, v in run.data.params.items() if k.startswith("dp")}
    assert dp_params and not [k for k in dp_params if "seed" in k], dp_params
    assert "secret" in dp_params.values(), dp_params
    _, cfg = load_head(tmp_path / "a/head_dp")
    assert cfg["dp"]["dp_randomness"] == "secret" and "dp_seed" not in cfg["dp"]


@pytest.mark.slow  # two train_dp runs (~15 s)
def test_a_seeded_dp_head_is_reproducible_and_records_its_seed(
    tmp_path: Path, emb_path: Path
) -> None:
    """dp.seed: an int reproduces the head bit for bit and config.json records it ("seeded": the ε
    then holds only against someone without it)."""
    states = []
    for i in range(2):
        run_dir = tmp_path / str(i)
        assert train_dp.main([*dp_args(run_dir, emb_path), "--set", "dp.seed=7"]) == 0
        state, cfg = load_head(run_dir / "a/head_dp")
        assert cfg["dp"]["dp_randomness"] == "seeded" and cfg["dp"]["dp_seed"] == 7
        states.append(state)
    assert all((states[0][k] == states[1][k]).all() for k in states[0])


def test_seeded_dp_heads_on_other_embeddings_of_one_dataset_get_other_streams(
    tmp_path: Path, emb_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under one dp.seed, two heads of dataset "syn" trained on different embeddings (another
    backbone, resize or revision: same dim, same N, same settings) must not share sampling, noise
    or dropout: the streams are derived from the embeddings' fingerprint too. The same embeddings
    give the same streams."""
    from privacy import dp as dp_module

    class Derived(Exception):
        pass

    seen: list[tuple[int, int, int]] = []
    derive = dp_module.DPStreams.derive.__func__

    def spy(cls, seed, context):
        out = derive(cls, seed, context)
        seen.append((out.sampling, out.noise, out.dropout))
        raise Derived  # the streams are all this test needs: no training

    monkeypatch.setattr(dp_module.DPStreams, "derive", classmethod(spy))
    other = tmp_path / "other.safetensors"
    save_embeddings(other, synthetic_embeddings(seed=1))
    for i, path in enumerate((emb_path, emb_path, other)):
        with pytest.raises(Derived):
            train_dp.main([*dp_args(tmp_path / str(i), path), "--set", "dp.seed=7"])
    assert len(seen) == 3 and seen[0] == seen[1]
    assert not set(seen[2]) & set(seen[0]), (seen[0], seen[2])


@pytest.mark.parametrize(
    ("method", "eps", "sets", "message"),
    [
        ("dpsh", "8", [], "couples records"),
        ("dsh", "8", ["methods.dsh.memory_bank=true"], "memory_bank=true"),
        ("csq", "0", [], "must be finite and > 0"),
        ("csq", "-1", [], "must be finite and > 0"),
        ("csq", "inf", [], "--epsilon inf: the non-private head is the train stage"),
        ("csq", "8", ["dp.delta=1.5"], "dp.delta"),
        ("csq", "8", ["dp.delta=0"], "dp.delta"),
        ("csq", "8", ["dp.max_grad_norm=0"], "dp.max_grad_norm"),
        ("csq", "8", ["dp.batch_size=0"], "dp.batch_size"),
        ("csq", "8", ["dp.lr=-0.1"], "dp.lr"),
        ("csq", "0.0001", ["dp.delta=0.000001", "dp.epochs=60"], "cannot reach"),
    ],
)
def test_bad_dp_input_exits_2_with_one_line_and_no_output(
    tmp_path: Path, emb_path: Path, caplog, method: str, eps: str, sets: list[str], message: str
) -> None:
    extra = [a for s in sets for a in ("--set", s)]
    assert train_dp.main([*dp_args(tmp_path, emb_path, method=method, eps=eps), *extra]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert not (tmp_path / "a/head_dp").exists() and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_delta_at_least_one_over_n_warns(tmp_path: Path, emb_path: Path, caplog) -> None:
    args = [*dp_args(tmp_path, emb_path), "--set", "dp.delta=0.01", "--set", "dp.epochs=1"]
    with pytest.warns(UserWarning, match="1/N"):
        assert train_dp.main(args) == 0


@pytest.mark.parametrize(
    ("mech", "extra", "message"),
    [
        ("rr", ["--epsilon-code", "0"], "epsilon-code 0.0"),
        ("rr", ["--epsilon-code", "-3"], "must be > 0"),
        ("rr", [], "needs --epsilon-code"),
        ("kanon", ["--set", "release.k=0"], "release.k"),
        ("kanon", ["--set", "release.k=301"], "larger than the 300"),
    ],
)
def test_bad_release_input_exits_2(
    tmp_path: Path, emb_path: Path, caplog, mech: str, extra: list[str], message: str
) -> None:
    assert (
        train.main(
            [
                *BASE,
                "--dataset",
                "syn",
                "--method",
                "csq",
                "--bits",
                "12",
                "--embeddings",
                str(emb_path),
                "--out",
                str(tmp_path / "a/head"),
                "--metrics",
                str(tmp_path / "m/train.json"),
                "--history",
                str(tmp_path / "p/train.csv"),
            ]
        )
        == 0
    )
    caplog.clear()
    code = release.main(
        [
            *BASE,
            "--head",
            str(tmp_path / "a/head"),
            "--mechanism",
            mech,
            *extra,
            "--out",
            str(tmp_path / "a/rel"),
            "--metrics",
            str(tmp_path / "m/rel.json"),
            "--embeddings",
            str(emb_path),
        ]
    )
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert not (tmp_path / "a/rel").exists()


def test_dp_schedule_overrides_the_train_block_only_where_set() -> None:
    from pipeline.config import load_params
    from pipeline.train import fit_config

    plain = load_params(
        REPO / "params.yaml",
        {
            "train.lr": 0.002,
            "train.batch_size": 64,
            "train.epochs": 7,
            "dp.lr": None,
            "dp.batch_size": None,
            "dp.epochs": None,
            "dp.selection": None,
            "train.ema_epochs": 0.0,
            "train.geometry": 0.0,
        },
    )
    assert train_dp.dp_fit_config(plain, progress=False) == fit_config(plain, progress=False)
    tuned = load_params(
        REPO / "params.yaml",
        {
            "train.lr": 0.002,
            "dp.lr": 0.01,
            "dp.batch_size": 128,
            "dp.epochs": 3,
            "train.ema_epochs": 5.0,
            "train.geometry": 1.0,
            "train.selection": "balanced_map",
        },
    )
    cfg = train_dp.dp_fit_config(tuned, progress=False)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (0.01, 128, 3)
    assert cfg.ema_epochs == 0.0  # the DP schedule was chosen without weight averaging
    assert cfg.geometry == 0.0  # the neighbourhood term couples records: no DP-SGD with it
    assert fit_config(tuned, progress=False).geometry == 1.0  # the non-private heads keep it
    assert cfg.patience == tuned.train.patience  # passed through: dp_fit never stops early
    # and selected with the class-balanced vote share it was chosen with
    assert cfg.selection == "balanced_soft_accuracy" != tuned.train.selection
    assert cfg.max_steps == tuned.train.max_steps and cfg.weight_decay == tuned.train.weight_decay


def test_dp_fit_config_records_the_class_balance_and_window_the_dp_fit_applies() -> None:
    """Poisson batches draw every record alike and the DP plugin picks the best single epoch:
    train.class_balance and train.selection_window do nothing under DP, so the DP fit config (the
    ``fit`` block of a DP head's config.json) holds their neutral values, not the train block's."""
    from pipeline.config import load_params
    from pipeline.train import fit_config

    params = load_params(
        REPO / "params.yaml", {"train.class_balance": 1.0, "train.selection_window": 5}
    )
    cfg = train_dp.dp_fit_config(params, progress=False)
    assert (cfg.class_balance, cfg.selection_window) == (0.0, 1)
    plain = fit_config(params, progress=False)  # the non-private heads keep them
    assert (plain.class_balance, plain.selection_window) == (1.0, 5)


def test_a_dp_head_records_no_digest_of_its_training_records(
    tmp_path: Path, emb_path: Path
) -> None:
    """The content fingerprint hashes every training record: an adversary who knows all records but
    one recomputes it for each candidate and tells neighbouring datasets apart (ε = ∞ for that
    field). A DP head's config.json (and MLflow tag) records the public fingerprint instead: val,
    test and the train split's shape; later stages check that."""
    import numpy as np

    from pipeline import tracking
    from pipeline.artifacts import (
        ArtifactError,
        EmbeddingsFile,
        check_head_embeddings,
        load_embeddings,
    )

    assert train_dp.main(dp_args(tmp_path, emb_path)) == 0
    _, cfg = load_head(tmp_path / "a/head_dp")
    emb = load_embeddings(emb_path)
    assert "fingerprint" not in cfg["embeddings"]
    assert cfg["embeddings"]["public_fingerprint"] == emb.public_fingerprint
    metrics = json.loads((tmp_path / "m/train_dp.json").read_text())  # what the report matches
    assert metrics["embeddings_fingerprint"] == emb.public_fingerprint
    tags = tracking.head_tags("syn", "csq", 12, emb, fingerprint=emb.public_fingerprint)
    assert tags["embeddings"] == emb.public_fingerprint != emb.fingerprint
    # a neighbouring dataset (training record 0 replaced): same public digest, other full one
    x = {s: np.array(v) for s, v in emb.x.items()}
    x["train"][0] += 1.0
    neighbour = EmbeddingsFile(x, emb.y, dict(emb.meta))
    assert neighbour.public_fingerprint == emb.public_fingerprint
    assert neighbour.fingerprint != emb.fingerprint
    check_head_embeddings(cfg, emb, head_dir=tmp_path, embeddings_path=emb_path)  # accepted
    x["val"][0] += 1.0  # other val rows: refused, naming what the public digest covers
    other = EmbeddingsFile(x, emb.y, dict(emb.meta))
    with pytest.raises(ArtifactError, match="val/test rows or labels, or the train split's size"):
        check_head_embeddings(cfg, other, head_dir=tmp_path, embeddings_path=emb_path)


def test_evaluate_tags_a_dp_head_with_its_public_fingerprint(
    tmp_path: Path, emb_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate's MLflow ``embeddings`` tag is the one the head's train run carries: the public
    fingerprint for a DP head (it was the full one, so the two runs of one head did not group)."""
    from pipeline import tracking
    from pipeline.artifacts import load_embeddings

    assert train_dp.main(dp_args(tmp_path, emb_path)) == 0
    common = [*BASE, "--dataset", "syn", "--method", "csq", "--bits", "12"]
    assert run_knn(tmp_path, emb_path) == 0

    class Tagged(Exception):
        pass

    def capture(cfg: object, *, name: str, tags: dict[str, str]) -> None:
        raise Tagged(tags)

    monkeypatch.setattr(tracking, "stage_run", capture)
    with pytest.raises(Tagged) as caught:
        evaluate.main(
            [
                *common,
                "--embeddings",
                str(emb_path),
                "--head",
                str(tmp_path / "a/head_dp"),
                "--float-metrics",
                str(tmp_path / "m/knn.json"),
                "--metrics",
                str(tmp_path / "m/eval_dp.json"),
                "--sweep",
                str(tmp_path / "p/eval_dp.csv"),
                "--confusion",
                str(tmp_path / "a/eval_dp/c.png"),
            ]
        )
    tags = caught.value.args[0]
    emb = load_embeddings(emb_path)
    assert tags["embeddings"] == emb.public_fingerprint != emb.fingerprint
    assert tags["defence"] == "dp"


def test_a_dp_head_s_run_logs_the_schedule_it_trained_with(
    tmp_path: Path, emb_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run logged the train block (train.lr, batch_size, epochs, standardize) while DP-SGD
    trained with dp.* (config.json's fit block was right): MLflow compared the wrong settings."""
    import contextlib

    from pipeline import tracking
    from tests.pipeline.test_extract import RecordingRun

    runs: list[RecordingRun] = []

    @contextlib.contextmanager
    def fake_stage_run(config, *, name, tags=None):
        runs.append(RecordingRun())
        yield runs[-1]

    monkeypatch.setattr(tracking, "stage_run", fake_stage_run)
    sets = ["dp.lr=0.01", "dp.batch_size=64", "dp.epochs=2", "dp.standardize=false"]
    sets += ["train.lr=0.001", "train.batch_size=256", "train.standardize=true"]
    argv = dp_args(tmp_path, emb_path) + [a for s in sets for a in ("--set", s)]
    assert train_dp.main(argv) == 0
    (run,) = runs
    logged = run.params["train"]
    _, cfg = load_head(tmp_path / "a/head_dp")
    assert (logged["lr"], logged["batch_size"], logged["epochs"]) == (0.01, 64, 2)
    assert (cfg["fit"]["lr"], cfg["fit"]["batch_size"], cfg["fit"]["epochs"]) == (0.01, 64, 2)
    assert logged["standardize"] is False and logged["class_balance"] == 0.0
    assert logged["selection_window"] == 1 and logged["ema_epochs"] == 0.0
