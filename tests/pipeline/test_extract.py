"""Stage ``extract``: images -> embeddings file end to end, and bring-your-own embeddings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from pipeline.artifacts import load_embeddings
from pipeline.backbones import load_backbone
from pipeline.config import BackboneConfig, load_params
from pipeline.data import ImageSplit
from pipeline.extract import embed_images, extract_dataset, main
from tests.conftest import REPO

FAST = [
    "--set",
    "backbone.name=tiny-random",
    "--set",
    "backbone.image_size=56",
    "--set",
    "tracking.enabled=false",
]


def args(tmp: Path, dataset: str, *extra: str) -> list[str]:
    return [
        "--params", str(REPO / "params.yaml"), *FAST, "--dataset", dataset,
        "--out", str(tmp / "emb.safetensors"), "--metrics", str(tmp / "metrics.json"), "--no-progress", *extra,
    ]  # fmt: skip


def medmnist_args(tmp: Path, root: Path, dataset: str = "breastmnist", *extra: str) -> list[str]:
    sets = [f"data.root={root}", "data.download=false", "data.limit=40"]
    return args(tmp, dataset, *[a for s in sets for a in ("--set", s)], *extra)


def byo_args(tmp: Path, path: Path, *extra: str) -> list[str]:
    return args(
        tmp, "mine", "--set", f"data.sources.mine={{kind: embeddings, path: '{path}'}}", *extra
    )


def test_main_breastmnist_tiny_random(tmp_path: Path, shared_medmnist: Path) -> None:
    assert main(medmnist_args(tmp_path, shared_medmnist)) == 0
    emb = load_embeddings(tmp_path / "emb.safetensors")
    assert {s: emb.x[s].shape for s in ("train", "val", "test")} == {
        s: (40, 32) for s in ("train", "val", "test")
    }
    assert emb.y["train"].dtype == np.int64 and set(np.unique(emb.y["train"])) == {0, 1}
    meta = emb.meta
    assert (
        meta["dataset"] == "breastmnist"
        and meta["task"] == "binary-class"
        and meta["n_classes"] == "2"
    )
    assert json.loads(meta["class_names"]) == ["malignant", "normal, benign"]
    assert meta["backbone"] == "tiny-random" and meta["revision"] == "tiny-random-seed0"
    assert (meta["image_size"], meta["resize"], meta["pooling"], meta["dtype"], meta["dim"]) == (
        "56", "resize", "cls", "fp32", "32",
    )  # fmt: skip
    assert meta["medmnist_flag"] == "breastmnist" and meta["medmnist_size"] == "28"
    assert meta["md5"] == "750601b1f35ba3300ea97c75c52ff8f6"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"], metrics["dim"]) == (
        40,
        40,
        40,
        32,
    )
    assert metrics["images_per_s"] > 0 and metrics["seconds"] > 0


def test_missing_medmnist_file_is_downloaded_by_the_stage(
    tmp_path: Path, shared_medmnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download lands inside the stage's all-or-nothing output block (which only stages
    outputs): the verified file is in data.root and read back, the embeddings are written."""
    from pipeline.sources.medmnist import _medmnist_info_table

    info = _medmnist_info_table()["breastmnist"]
    monkeypatch.setitem(info, "url", (shared_medmnist / "breastmnist.npz").as_uri())
    root = tmp_path / "cache"
    argv = medmnist_args(tmp_path, root, "breastmnist", "--set", "data.download=true")
    assert main(argv) == 0
    assert [p.name for p in root.iterdir()] == ["breastmnist.npz"]
    assert (root / "breastmnist.npz").read_bytes() == (
        shared_medmnist / "breastmnist.npz"
    ).read_bytes()
    assert load_embeddings(tmp_path / "emb.safetensors").x["train"].shape == (40, 32)


def test_extract_dataset_pad_cls_mean_rgb(tmp_path: Path, shared_medmnist: Path) -> None:
    overrides = {
        "backbone.name": "tiny-random", "backbone.image_size": 42, "backbone.resize": "pad",
        "backbone.pooling": "cls_mean", "backbone.device": "cpu", "data.root": str(shared_medmnist),
        "data.download": False, "data.limit": 12, "tracking.enabled": False,
    }  # fmt: skip
    params = load_params(REPO / "params.yaml", overrides)
    metrics = extract_dataset(params, "retinamnist", tmp_path / "r.safetensors", progress=False)
    emb = load_embeddings(tmp_path / "r.safetensors")
    assert metrics["dim"] == 64 and emb.x["test"].shape == (12, 64)
    assert emb.meta["task"] == "ordinal-regression" and emb.meta["resize"] == "pad"


class CountingReader:
    """A lazy reader over an array, counting reads (exercises the prefetching path)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.reads = images, 0

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices):
        self.reads += 1
        return [self.images[i] for i in indices]


def test_embed_images_is_batch_size_independent_and_ordered() -> None:
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (23, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(23) % 2
    backbone = load_backbone(
        BackboneConfig(name="tiny-random", image_size=28, device="cpu"), seed=0
    )
    ref = backbone.embed_images(images).numpy()
    in_memory = embed_images(
        backbone, ImageSplit(labels=labels, images=images), batch_size=5, progress=False
    )
    reader = CountingReader(images)
    lazy = embed_images(
        backbone, ImageSplit(labels=labels, reader=reader), batch_size=7, progress=False
    )
    assert in_memory.dtype == np.float32 and in_memory.shape == (23, 32)
    np.testing.assert_allclose(in_memory, ref, atol=1e-5)
    np.testing.assert_allclose(lazy, ref, atol=1e-5)
    assert reader.reads == 4


def user_arrays(n: int = 60, dim: int = 8, *, val: bool = False) -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    out = {}
    for s in ("train", "val", "test") if val else ("train", "test"):
        out[f"{s}_x"] = g.normal(size=(n, dim)).astype(np.float32)
        out[f"{s}_y"] = (np.arange(n) % 3).reshape(-1, 1)  # MedMNIST-style [N, 1] labels
    return out


def test_bring_your_own_npz_gets_val_carved(tmp_path: Path) -> None:
    np.savez(tmp_path / "mine.npz", **user_arrays())
    assert main(byo_args(tmp_path, tmp_path / "mine.npz")) == 0
    emb = load_embeddings(tmp_path / "emb.safetensors")
    assert [len(emb.y[s]) for s in ("train", "val", "test")] == [54, 6, 60]
    assert np.bincount(emb.y["val"]).tolist() == [2, 2, 2]
    assert emb.meta["backbone"] == "user-supplied" and emb.meta["task"] == "multi-class"
    assert json.loads(emb.meta["class_names"]) == ["0", "1", "2"] and emb.dim == 8
    # train + val are exactly the user's train rows
    user_train = user_arrays()["train_x"]
    both = np.concatenate([emb.x["train"], emb.x["val"]])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, user_train.tolist()))


def test_bring_your_own_safetensors_multilabel_with_metadata(tmp_path: Path) -> None:
    g = np.random.default_rng(1)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_x"] = g.normal(size=(20, 4)).astype(np.float64)
        arrays[f"{s}_y"] = g.integers(0, 2, (20, 3)).astype(np.uint8)
    meta = {"backbone": "my-vit", "revision": "abc", "class_names": '["a", "b", "c"]'}
    save_file(
        {k: np.ascontiguousarray(v) for k, v in arrays.items()},
        str(tmp_path / "m.safetensors"),
        metadata=meta,
    )
    assert main(byo_args(tmp_path, tmp_path / "m.safetensors", "--set", "data.limit=10")) == 0
    emb = load_embeddings(tmp_path / "emb.safetensors")
    assert emb.multilabel and emb.y["val"].shape == (10, 3) and emb.x["train"].dtype == np.float32
    assert (
        emb.meta["task"] == "multi-label"
        and emb.meta["backbone"] == "my-vit"
        and emb.meta["revision"] == "abc"
    )
    assert json.loads(emb.meta["class_names"]) == ["a", "b", "c"]


def test_user_file_with_nan_fails_without_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arrays = user_arrays(val=True)
    arrays["test_x"][3, 1] = np.nan
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(byo_args(tmp_path, tmp_path / "bad.npz")) == 2
    assert "NaN/inf" in caplog.text and "test_x" in caplog.text
    assert not (tmp_path / "emb.safetensors").exists() and not (tmp_path / "metrics.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.npz"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "data.limit=1"], "data.limit: 1 is smaller than the 2 classes"),
        (
            ["--set", "backbone.name=/no/such/model"],
            "local model directory '/no/such/model' does not exist",
        ),
    ],
)
def test_bad_inputs_exit_2_without_output(
    tmp_path: Path,
    shared_medmnist: Path,
    caplog: pytest.LogCaptureFixture,
    extra: list[str],
    message: str,
) -> None:
    assert main([*medmnist_args(tmp_path, shared_medmnist), *extra]) == 2
    assert message in caplog.text
    assert not (tmp_path / "emb.safetensors").exists()


def test_missing_file_and_unknown_dataset_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(medmnist_args(tmp_path, tmp_path / "empty")) == 2
    assert "data.download: true" in caplog.text
    assert main(args(tmp_path, "nosuchdataset")) == 2
    assert "unknown dataset 'nosuchdataset'" in caplog.text
    assert not (tmp_path / "emb.safetensors").exists()


class RecordingRun:
    """Stands in for pipeline.tracking.StageRun (MLflow itself is covered by the stage tests)."""

    def __init__(self) -> None:
        self.params: dict = {}
        self.metrics: dict = {}
        self.artifacts: list = []
        self.tags: dict = {}

    def log_params(self, params) -> None:
        self.params.update(params)

    def log_metrics(self, metrics, *, step: int = 0) -> None:
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append(path)

    def set_tag(self, key, value) -> None:
        self.tags[key] = value


def test_tracking_logs_params_and_metrics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from pipeline import tracking

    runs: list[tuple[str, dict, RecordingRun]] = []

    @contextlib.contextmanager
    def fake_stage_run(config, *, name, tags=None):
        runs.append((name, dict(tags or {}), RecordingRun()))
        yield runs[-1][2]

    monkeypatch.setattr(tracking, "stage_run", fake_stage_run)
    np.savez(tmp_path / "mine.npz", **user_arrays())
    assert main(byo_args(tmp_path, tmp_path / "mine.npz")) == 0
    ((name, tags, run),) = runs
    assert name == "extract@mine" and tags == {"dataset": "mine", "backbone": "user-supplied"}
    assert run.params["data"]["source"]["kind"] == "embeddings" and "backbone" not in run.params
    assert run.metrics["n_val"] == 6 and run.metrics["dim"] == 8 and not run.artifacts
    assert json.loads((tmp_path / "metrics.json").read_text())["n_val"] == 6
    # the run is tagged with the SHA-256 of the file it wrote (the report nests it by that)
    digest = hashlib.sha256((tmp_path / "metrics.json").read_bytes()).hexdigest()
    assert run.tags == {tracking.METRICS_TAG: digest}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_overlaps_preprocessing_and_keeps_order() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)  # 3 batches of 10, last partial
    cfg = BackboneConfig(name="tiny-random", image_size=56, device="cuda", precision="fp32")
    bb = load_backbone(cfg, seed=0)
    split = ImageSplit(labels=np.zeros(23, dtype=np.int64), images=images)
    out = embed_images(bb, split, batch_size=10, progress=False)
    one_by_one = np.concatenate(
        [bb.embed_images(images[i : i + 1]).cpu().numpy() for i in range(23)]
    )
    assert out.shape == (23, bb.dim) and np.allclose(out, one_by_one, atol=1e-4)


class DroppingReader(CountingReader):
    """A reader that breaks the contract: it skips the last image of every batch it is asked for
    (as a plugin that leaves out unreadable files would)."""

    def read(self, indices):
        return super().read(indices)[: max(1, len(indices) - 1)]


def test_a_reader_returning_fewer_images_than_asked_is_a_bug_not_unset_rows() -> None:
    """Rows a reader left out stayed ``np.empty`` garbage in the embeddings (e.g. 1e-34, 3e29,
    -2e36), written without a word; now the reader is named and nothing is returned."""
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    backbone = load_backbone(
        BackboneConfig(name="tiny-random", image_size=28, device="cpu"), seed=0
    )
    split = ImageSplit(labels=np.zeros(10, dtype=np.int64), reader=DroppingReader(images))
    with pytest.raises(
        RuntimeError,
        match=r"DroppingReader\.read returned 3 images for the 4 positions 0\.\.3 of a split; an "
        r"ImageReader must return one image per position",
    ):
        embed_images(backbone, split, batch_size=4, progress=False)
    # a subset of it (data.limit, carving) names the reader underneath, positions in the subset
    subset = split.subset(np.arange(9, -1, -1))
    with pytest.raises(RuntimeError, match=r"DroppingReader\.read returned 3 images for the 4"):
        embed_images(backbone, subset, batch_size=4, progress=False)
    # the same reader asked one image at a time keeps the contract: every row is the image's own
    ref = backbone.embed_images(images).numpy()
    out = embed_images(backbone, split, batch_size=1, progress=False)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_the_official_breastmnist_copy_of_a_training_image_in_test_is_recorded(
    tmp_path: Path, shared_medmnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the official file: train image 115 and test image 76 are byte-identical (labels 0 and 1)
    sets = [f"data.root={shared_medmnist}", "data.download=false"]
    argv = args(tmp_path, "breastmnist", *[a for s in sets for a in ("--set", s)])
    with caplog.at_level("WARNING", logger="pipeline.extract"):
        assert main(argv) == 0
    emb = load_embeddings(tmp_path / "emb.safetensors")
    assert json.loads(emb.meta["duplicate_rows"]) == {
        "train": {"test": [115]},
        "test": {"train": [76]},
    }
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["duplicates_train"], metrics["duplicates_val"], metrics["duplicates_test"]) == (
        1,
        0,
        1,
    )
    assert (
        "1 test image(s) (rows 76) are byte-identical to 1 train image(s) (rows 115)" in caplog.text
    )
    np.testing.assert_allclose(emb.x["train"][115], emb.x["test"][76], atol=1e-5)  # same image
