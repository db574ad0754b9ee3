"""The ``source`` stage: digests of a user's own data, and DVC re-running extract when it changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import source_stamp
from pipeline.config import load_params
from tests.conftest import REPO


def test_a_file_is_digested_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert source_stamp.digest_path(path) == {
        "path": str(path),
        "type": "file",
        "bytes": 3000,
        "sha256": hashlib.sha256(b"abc" * 1000).hexdigest(),
    }


def test_a_folder_listing_changes_with_a_new_renamed_or_resized_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"x" * 10)
    (tmp_path / "b.png").write_bytes(b"y" * 5)
    first = source_stamp.digest_path(tmp_path)
    assert first["type"] == "folder" and first["files"] == 2 and first["bytes"] == 15
    assert source_stamp.digest_path(tmp_path) == first  # deterministic
    seen = {first["listing_sha256"]}
    (tmp_path / "b.png").rename(tmp_path / "c.png")  # a relabelled or renamed image
    seen.add(source_stamp.digest_path(tmp_path)["listing_sha256"])
    (tmp_path / "a" / "1.png").write_bytes(b"x" * 11)
    seen.add(source_stamp.digest_path(tmp_path)["listing_sha256"])
    (tmp_path / "a" / "2.png").write_bytes(b"")
    seen.add(source_stamp.digest_path(tmp_path)["listing_sha256"])
    assert len(seen) == 4


def test_missing_paths_are_recorded_and_medmnist_has_no_local_input(tmp_path: Path) -> None:
    assert source_stamp.digest_path(tmp_path / "nope") == {
        "path": str(tmp_path / "nope"),
        "type": "missing",
    }
    params = load_params(REPO / "params.yaml", {"tracking.enabled": False})
    assert source_stamp.source_stamp("breastmnist", params) == {
        "dataset": "breastmnist",
        "kind": "medmnist",
        "inputs": [],
    }


def _params_with_sources(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "feats.npz").write_bytes(b"features v1")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["sources"].update(
        feats={"kind": "embeddings", "path": str(tmp_path / "feats.npz")},
        folder={"kind": "imagefolder", "path": str(tmp_path / "imgs")},
        hub={"kind": "huggingface", "id": "uoft-cs/cifar10", "image_column": "img"},
    )
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(params, sort_keys=False))
    return out


def test_the_stage_writes_one_json_per_source_kind(tmp_path: Path) -> None:
    params = _params_with_sources(tmp_path)
    for name, kind, n in (("feats", "embeddings", 1), ("folder", "imagefolder", 1),
                          ("hub", "huggingface", 0)):  # fmt: skip
        out = tmp_path / f"s/{name}.json"
        argv = ["--params", str(params), "--dataset", name, "--out", str(out)]
        assert source_stamp.main(argv) == 0
        stamp = json.loads(out.read_text())
        assert stamp["dataset"] == name and stamp["kind"] == kind and len(stamp["inputs"]) == n
    assert json.loads((tmp_path / "s/feats.json").read_text())["inputs"][0]["sha256"] == (
        hashlib.sha256(b"features v1").hexdigest()
    )
    bad = ["--params", str(params), "--dataset", "nosuch", "--out", str(tmp_path / "x.json")]
    assert source_stamp.main(bad) == 2 and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("change", ["rewrite", "same"])
def test_dvc_reruns_extract_exactly_when_the_users_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The reviewer's case: an embeddings source rewritten in place used to leave every stage
    'up to date'. Outputs are stand-ins recorded with ``dvc commit``; only the source stage runs."""
    from dvc.repo import Repo

    work = tmp_path / "study"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    for pkg in ("pipeline", "hashers", "retrieval", "privacy"):
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load(_params_with_sources(tmp_path).read_text())
    params["data"]["datasets"] = ["feats"]
    params["train"].update(methods=["dpsh"], bits=[12])
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(work)
    monkeypatch.setenv("PYTHONPATH", str(work))
    Repo.init(str(work), no_scm=True)
    with Repo(str(work)) as repo:
        for stage in repo.index.stages:
            for o in stage.outs:
                Path(o.fs_path).parent.mkdir(parents=True, exist_ok=True)
                Path(o.fs_path).write_text("{}\n")
        assert (
            source_stamp.main(["--dataset", "feats", "--out", "artifacts/sources/feats.json"]) == 0
        )
        repo.commit(force=True)
        assert "extract@feats" not in repo.status()
        if change == "rewrite":
            (tmp_path / "feats.npz").write_bytes(b"features v2")
        repo.reproduce("source@feats", single_item=True)
        changed = {name.rsplit(":", 1)[-1] for name in repo.status()}
    assert ("extract@feats" in changed) == (change == "rewrite"), changed


def test_a_symlinked_class_folder_is_digested_and_broken_links_recorded(tmp_path: Path) -> None:
    """rglob (Python 3.11) did not enter a symlinked class folder: its images were not in the
    digest, so changing them did not re-run extract (stale embeddings)."""
    store = tmp_path / "store" / "malignant"
    store.mkdir(parents=True)
    (store / "1.png").write_bytes(b"x" * 10)
    root = tmp_path / "imgs"
    (root / "benign").mkdir(parents=True)
    (root / "benign" / "1.png").write_bytes(b"y" * 5)
    (root / "malignant").symlink_to(store)
    (root / "benign" / "up").symlink_to(root)  # a link loop: read once
    first = source_stamp.digest_path(root)
    assert first["files"] == 2 and first["bytes"] == 15 and "broken_links" not in first
    (store / "1.png").write_bytes(b"x" * 11)  # an image behind the link changes
    second = source_stamp.digest_path(root)
    assert second["bytes"] == 16 and second["listing_sha256"] != first["listing_sha256"]
    (root / "benign" / "2.png").symlink_to(tmp_path / "gone.png")
    broken = source_stamp.digest_path(root)
    assert broken["files"] == 2 and broken["broken_links"] == 1
    assert broken["listing_sha256"] != second["listing_sha256"]


def test_a_local_model_folder_of_an_image_source_is_digested(tmp_path: Path) -> None:
    """A model re-downloaded into ``models/x`` in place left extract up to date (the folder was no
    dependency of it): its listing is now part of an image source's stamp. An embeddings source
    runs no backbone, and a hub id has no folder: neither stamps one."""
    model = tmp_path / "models" / "dino"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"w" * 100)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "emb.npz").write_bytes(b"npz")
    sets = {
        "tracking.enabled": False,
        "data.datasets": ["pics", "vecs"],
        "data.sources": {
            "pics": {"kind": "imagefolder", "path": str(tmp_path / "imgs")},
            "vecs": {"kind": "embeddings", "path": str(tmp_path / "emb.npz")},
        },
        "backbone.name": str(model),
    }
    params = load_params(REPO / "params.yaml", sets)
    first = source_stamp.source_stamp("pics", params)
    assert first["backbone"] == source_stamp.digest_path(model)
    assert first["backbone"]["files"] == 2 and first["backbone"]["bytes"] == 102
    (model / "model.safetensors").write_bytes(b"v" * 101)  # another snapshot, same name
    assert source_stamp.source_stamp("pics", params)["backbone"] != first["backbone"]
    assert "backbone" not in source_stamp.source_stamp("vecs", params)
    hub = load_params(REPO / "params.yaml", {**sets, "backbone.name": "facebook/dinov2-base"})
    assert "backbone" not in source_stamp.source_stamp("pics", hub)


def test_a_link_re_pointed_at_another_image_of_the_same_size_and_time_changes_the_digest(
    tmp_path: Path,
) -> None:
    """DVC (cache.type symlink) and git-annex keep images as links into a content-addressed store;
    a checkout of another version re-points the links. Two images of one size and time stamp
    (fixed-size .ppm/.bmp, mtimes kept from a zip or tar) left the listing unchanged, so extract
    did not re-run on the changed images."""
    store, root = tmp_path / "store", tmp_path / "imgs"
    store.mkdir()
    (root / "cat").mkdir(parents=True)
    for name, pixel in (("a.ppm", b"\x00\x00\x00"), ("b.ppm", b"\xff\xff\xff")):
        (store / name).write_bytes(b"P6 1 1 255\n" + pixel)
        os.utime(store / name, ns=(10**18, 10**18))
    (root / "plain.ppm").write_bytes(b"P6 1 1 255\n\x01\x01\x01")
    os.utime(root / "plain.ppm", ns=(10**18, 10**18))
    link = root / "cat" / "x.ppm"
    link.symlink_to("../../store/a.ppm")
    first = source_stamp.digest_path(root)
    link.unlink()
    link.symlink_to("../../store/b.ppm")  # another image, same size and time stamp
    second = source_stamp.digest_path(root)
    assert (second["files"], second["bytes"]) == (first["files"], first["bytes"]) == (2, 28)
    assert second["listing_sha256"] != first["listing_sha256"]
    listing = b"cat/x.ppm\x0014\x00" + b"1000000000000000000\x00../../store/b.ppm\n"
    listing += b"plain.ppm\x0014\x001000000000000000000\n"  # a file that is no link: as before
    assert second["listing_sha256"] == hashlib.sha256(listing).hexdigest()
