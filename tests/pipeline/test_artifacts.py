"""On-disk formats: round trips, atomic writes and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifacts import (
    ArtifactError,
    atomic_outputs,
    atomic_path,
    load_codes,
    load_embeddings,
    load_head,
    save_codes,
    save_embeddings,
    save_head,
    write_json,
)
from pipeline.synthetic import synthetic_embeddings


def test_embeddings_round_trip(tmp_path: Path) -> None:
    emb = synthetic_embeddings()
    save_embeddings(tmp_path / "e.safetensors", emb)
    back = load_embeddings(tmp_path / "e.safetensors")
    for s in ("train", "val", "test"):
        assert np.array_equal(back.x[s], emb.x[s]) and np.array_equal(back.y[s], emb.y[s])
    assert back.meta["format"] == "hashaudit.embeddings/1"
    assert back.meta["dim"] == "32" and back.n_classes == 3 and back.backbone == "tiny-random"
    assert back.multihot("test").sum(1).tolist() == [1.0] * 90


def test_multilabel_embeddings_keep_multi_hot(tmp_path: Path) -> None:
    emb = synthetic_embeddings(multilabel=True)
    save_embeddings(tmp_path / "e.safetensors", emb)
    back = load_embeddings(tmp_path / "e.safetensors")
    assert back.multilabel and back.y["train"].shape == (300, 3)
    assert back.multihot("train").max() == 1.0


def test_user_npz_with_medmnist_label_column(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    arrays = {f"{s}_x": g.normal(size=(10, 4)).astype(np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": (np.arange(10) % 2).reshape(-1, 1) for s in ("train", "val", "test")})
    np.savez(tmp_path / "mine.npz", **arrays)
    emb = load_embeddings(tmp_path / "mine.npz")
    assert emb.y["train"].shape == (10,) and emb.n_classes == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.update(train_x=np.full((10, 4), np.nan, dtype=np.float32)), "NaN/inf values"),
        (
            lambda a: a.update(val_x=np.zeros((10, 5), dtype=np.float32)),
            "dimension 5 but train_x has 4",
        ),
        (lambda a: a.update(test_y=np.zeros(3, dtype=np.int64)), "3 labels for 10 embeddings"),
        (lambda a: a.pop("test_x"), "missing test_x"),
        (lambda a: a.update(extra=np.zeros(1)), "unexpected keys"),
        (lambda a: a.update(train_y=np.full(10, 0.5)), "integer class ids"),
    ],
)
def test_bad_user_embeddings_are_named(tmp_path: Path, mutate, message: str) -> None:
    arrays = {f"{s}_x": np.ones((10, 4), dtype=np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": np.arange(10) % 2 for s in ("train", "val", "test")})
    mutate(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ArtifactError, match=message):
        load_embeddings(tmp_path / "bad.npz")


def test_truncated_files_are_clear_errors(tmp_path: Path) -> None:
    emb = synthetic_embeddings()
    save_embeddings(tmp_path / "e.safetensors", emb)
    data = (tmp_path / "e.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_embeddings(tmp_path / "t.safetensors")
    np.savez(tmp_path / "n.npz", train_x=np.zeros((3, 2)))
    raw = (tmp_path / "n.npz").read_bytes()
    (tmp_path / "n.npz").write_bytes(raw[:40])
    with pytest.raises(ArtifactError, match="truncated"):
        load_embeddings(tmp_path / "n.npz")
    with pytest.raises(ArtifactError, match="not found"):
        load_embeddings(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    with pytest.raises(
        ValueError, match=r"m\.json: x is not a finite number .*nothing was written"
    ):
        write_json(target, {"x": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}


def test_unstaged_file_lands_at_once_inside_an_output_block(tmp_path: Path) -> None:
    """``stage=False`` (a downloaded input): readable inside the block, kept when the block
    fails, while the block's staged output is neither written early nor kept."""
    cache, out = tmp_path / "cache" / "in.bin", tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_outputs():
        with atomic_path(cache, stage=False) as tmp:
            tmp.write_bytes(b"data")
        assert cache.read_bytes() == b"data"
        write_json(out, {"a": 1})
        assert not out.exists()
        raise RuntimeError("the stage fails later")
    assert cache.read_bytes() == b"data" and not out.exists()


def test_head_and_codes_round_trip(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_head(tmp_path / "h", state, {"method": "dpsh"})
    back, cfg = load_head(tmp_path / "h")
    assert torch.equal(back["w"], state["w"]) and cfg == {"method": "dpsh"}
    codes = {"train": np.zeros((4, 2), dtype=np.uint8), "test": np.ones((2, 2), dtype=np.uint8)}
    save_codes(tmp_path / "c.safetensors", codes, n_bits=12, meta={"method": "dpsh"})
    got, n_bits, meta = load_codes(tmp_path / "c.safetensors")
    assert n_bits == 12 and meta["method"] == "dpsh" and np.array_equal(got["test"], codes["test"])
    with pytest.raises(ValueError, match="expected uint8"):
        save_codes(tmp_path / "c2.safetensors", codes, n_bits=24, meta={})
    with pytest.raises(ArtifactError, match="no trained head"):
        load_head(tmp_path / "nothing")


def test_zero_dimension_embeddings_are_refused_when_loaded(tmp_path: Path) -> None:
    arrays = {f"{s}_x": np.zeros((10, 0), dtype=np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": np.arange(10) % 2 for s in ("train", "val", "test")})
    np.savez(tmp_path / "flat.npz", **arrays)
    with pytest.raises(
        ArtifactError, match=r"train_x has shape \(10, 0\): embeddings of dimension 0"
    ):
        load_embeddings(tmp_path / "flat.npz")


def test_fingerprints_hash_the_documented_byte_layout() -> None:
    """The full and public fingerprints, recomputed by hand from their documented layout (per
    split in train, val, test order: ``<split>_x:<dtype>:<shape>;`` then the float32 bytes, the
    same for the int64 labels; a private split contributes its header only). Committed metrics
    and heads record these digests: a refactor must not change them."""
    import hashlib

    import numpy as np

    from pipeline.artifacts import content_fingerprint, public_fingerprint

    x = {s: np.array([[i, -0.5]], dtype=np.float64) for i, s in enumerate(("train", "val", "test"))}
    y = {"train": np.array([2]), "val": np.array([0]), "test": np.array([1])}

    def by_hand(hidden: set[str]) -> str:
        h = hashlib.sha256()
        for s in ("train", "val", "test"):
            xs, ys = x[s].astype("<f4"), y[s].astype("<i8")
            for name, arr in ((f"{s}_x", xs), (f"{s}_y", ys)):
                h.update(f"{name}:{arr.dtype.str}:{list(arr.shape)};".encode())
                if s not in hidden:
                    h.update(arr.tobytes())
        return h.hexdigest()

    assert content_fingerprint(x, y) == "sha256:" + by_hand(set())
    assert public_fingerprint(x, y) == "sha256-public:" + by_hand({"train"})
    assert public_fingerprint(x, y, private=("test", "train")) == (
        "sha256-public(test,train):" + by_hand({"train", "test"})
    )


def test_public_fingerprints_name_the_splits_they_leave_out() -> None:
    """A public fingerprint hashes every split's shape but only the content of the splits it does
    not name as private; its prefix names them, so a check recomputes the same kind."""
    import numpy as np

    from pipeline.artifacts import (
        ArtifactError,
        EmbeddingsFile,
        check_same_embeddings,
        private_splits,
        public_fingerprint,
    )
    from pipeline.synthetic import synthetic_embeddings

    emb = synthetic_embeddings()
    dp = public_fingerprint(emb.x, emb.y)  # a DP head's kind: train private
    assert dp == emb.public_fingerprint and dp.startswith("sha256-public:")
    assert private_splits(dp) == ("train",) and private_splits(emb.fingerprint) is None
    both = public_fingerprint(emb.x, emb.y, private=["train", "test"])
    assert both.startswith("sha256-public(test,train):")
    assert private_splits(both) == ("test", "train") and emb.digest_like(both) == both
    x = {s: np.array(v) for s, v in emb.x.items()}
    x["test"][3] *= 2.0  # a test record changed: same digest when test is private
    changed = EmbeddingsFile(x, emb.y, dict(emb.meta))
    assert changed.digest_like(both) == both and changed.digest_like(dp) != dp
    fewer = EmbeddingsFile({**emb.x, "test": emb.x["test"][:-1]},
                           {**emb.y, "test": emb.y["test"][:-1]}, dict(emb.meta))  # fmt: skip
    with pytest.raises(
        ArtifactError, match=r"\(val rows or labels, or the train/test split's size\)"
    ):
        check_same_embeddings(both, fewer, embeddings_path=Path("e"), recorded_in=Path("r"))
    with pytest.raises(ValueError, match="private splits \\['query'\\]"):
        public_fingerprint(emb.x, emb.y, private=["query"])
    with pytest.raises(ArtifactError, match="unreadable embeddings fingerprint"):
        private_splits("sha256-publicX:00")
    # a corrupted split list is the file's fault (a clear error), not a ValueError traceback
    with pytest.raises(ArtifactError, match=r"unreadable embeddings fingerprint.*sha256-public\("):
        private_splits("sha256-public(foo):00")
    with pytest.raises(ArtifactError, match="unreadable embeddings fingerprint"):
        emb.digest_like("sha256-public(test,query):00")


def test_a_bfloat16_embeddings_file_is_read_as_exact_float32(tmp_path: Path) -> None:
    """Embeddings saved from torch in bf16 (a common half-precision export): NumPy has no bf16,
    so reading the file raised ``TypeError: data type 'bfloat16' not understood`` (a traceback,
    exit 1 from extract). They are widened to float32, which holds every bf16 value exactly."""
    from safetensors.torch import save_file

    from pipeline.artifacts import read_embeddings_raw

    x = torch.tensor([[1.0, -2.5, 3.0e38], [0.1, 1.0e-3, 7.0]]).bfloat16()
    path = tmp_path / "mine.safetensors"
    tensors = {"train_x": x, "train_y": torch.tensor([0, 1]), "test_x": x[:1].clone()}
    save_file({**tensors, "test_y": torch.tensor([1])}, str(path))
    xs, ys, _ = read_embeddings_raw(path)
    got = xs["train"]
    assert got.dtype == np.float32 and xs["test"].tolist() == got[:1].tolist()
    # bf16 keeps 8 bits of mantissa: 0.1 is stored as 0.10009765625, 3e38 as 2.9937e38
    assert got.tolist() == x.float().tolist()
    assert got[1, 0] == np.float32(0.10009765625)
    assert ys["train"].tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_a_float8_embeddings_file_is_read_as_exact_float32(tmp_path: Path, dtype) -> None:
    """Only bf16 was widened through torch: a float8 file (quantised embeddings) raised
    ``AttributeError: module 'numpy' has no attribute 'float8_e4m3fn'`` (a traceback, exit 1)."""
    from safetensors.torch import save_file

    from pipeline.artifacts import read_embeddings_raw

    # 0.5, -1.5, 2, 0.25 and 448 / 57344 (the largest e4m3fn / e5m2 value) are exact in float8
    top = 448.0 if dtype == torch.float8_e4m3fn else 57344.0
    x = torch.tensor([[0.5, -1.5], [2.0, top], [0.25, 0.0]]).to(dtype)
    path = tmp_path / "mine.safetensors"
    tensors = {"train_x": x, "train_y": torch.tensor([0, 1, 0]), "test_x": x[:1].clone()}
    save_file({**tensors, "test_y": torch.tensor([1])}, str(path))
    xs, ys, _ = read_embeddings_raw(path)
    assert xs["train"].dtype == np.float32
    assert xs["train"].tolist() == [[0.5, -1.5], [2.0, top], [0.25, 0.0]]
    assert xs["test"].tolist() == [[0.5, -1.5]] and ys["train"].tolist() == [0, 1, 0]


def test_a_dtype_that_cannot_be_widened_is_named(tmp_path: Path) -> None:
    """Packed float4 (two values a byte) has no float32 conversion in torch: an ArtifactError
    (exit 2) naming the tensor and its dtype, not an AttributeError from NumPy."""
    from safetensors.torch import save_file

    from pipeline.artifacts import read_embeddings_raw

    path = tmp_path / "mine.safetensors"
    x4 = torch.zeros(3, 2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    save_file({"train_x": x4, "train_y": torch.tensor([0, 1, 0])}, str(path))
    with pytest.raises(ArtifactError) as err:
        read_embeddings_raw(path)
    assert str(err.value) == (
        f"{path}: tensor 'train_x' has dtype F4, which cannot be read as float32; save it as "
        "float32 (embeddings) or int64 (labels)"
    )


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_names_the_fix(tmp_path: Path, split: str) -> None:
    """'split 'val' is empty' said nothing of what to do."""
    arrays = {f"{s}_x": np.ones((10, 4), dtype=np.float32) for s in ("train", "val", "test")}
    arrays.update({f"{s}_y": np.arange(10) % 2 for s in ("train", "val", "test")})
    arrays[f"{split}_x"], arrays[f"{split}_y"] = np.ones((0, 4), np.float32), np.zeros(0, int)
    np.savez(tmp_path / "e.npz", **arrays)
    fix = (
        "add rows to val_x and val_y, or (in your own embeddings file) drop both to have val "
        "carved from train by data.val_fraction"
        if split == "val"
        else f"add rows to {split}_x and {split}_y (every split needs at least one row)"
    )
    with pytest.raises(ArtifactError) as err:
        load_embeddings(tmp_path / "e.npz")
    assert str(err.value).endswith(f"split {split!r} is empty ({split}_x has 0 rows); {fix}")


def test_a_confusion_plot_of_many_classes_has_no_per_cell_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid 1000-class file left knn drawing 10^6 count labels on a 602-inch figure for
    minutes: above 50 classes the plot is the heat map alone, at a capped size."""
    import matplotlib.pyplot as plt

    from pipeline.plots import confusion_png

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    for n in (3, 51):
        matrix = np.arange(n * n).reshape(n, n)
        confusion_png(tmp_path / f"c{n}.png", matrix, [f"c{i}" for i in range(n)], title="t")
        assert (tmp_path / f"c{n}.png").stat().st_size > 0
    texts = [len(fig.axes[0].texts) for fig in figures]
    assert texts == [9, 0]  # one count per cell up to 50 classes, none above
    ticks = [[t.get_text() for t in fig.axes[0].get_xticklabels()] for fig in figures]
    assert ticks[0] == ["c0", "c1", "c2"] and "c50" not in ticks[1]
    sizes = [fig.get_size_inches().tolist() for fig in figures]
    assert sizes == [[4.0, 4.0], [32.0, 32.0]]  # max(4, 0.6 * min(n, 50) + 2)
    for n in (4, 5):  # the bound itself still has its labels
        confusion_png(
            tmp_path / "b.png", np.eye(n, dtype=int), list("abcde")[:n], title="t", max_labelled=4
        )
    assert [len(fig.axes[0].texts) for fig in figures[2:]] == [16, 0]


def test_a_user_file_given_straight_to_a_stage_with_sparse_class_ids_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``knn --embeddings mine.npz`` skips the embeddings source (which refuses such ids): ids
    {1000, 2000, 3000} made 3001 classes there too (a 3001 x 3001 confusion plot that hung knn).
    Declared classes (n_classes metadata) or one gap stay accepted."""
    from pipeline import knn
    from pipeline.artifacts import load_embeddings, sparse_class_ids

    g = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_x"] = g.normal(size=(30, 4)).astype(np.float32)
        arrays[f"{s}_y"] = (np.arange(30) % 3 + 1) * 1000
    np.savez(tmp_path / "mine.npz", **arrays)
    with pytest.raises(ArtifactError, match=r"mine.npz: class ids \{1000, 2000, 3000\} leave 2998 "
                       r"of the 3001 ids 0..3000 unused; .* store the original ids as class_names"):  # fmt: skip
        load_embeddings(tmp_path / "mine.npz")
    argv = ["--dataset", "mine", "--embeddings", str(tmp_path / "mine.npz")]
    argv += ["--metrics", str(tmp_path / "m.json"), "--sweep", str(tmp_path / "s.csv")]
    argv += ["--confusion", str(tmp_path / "c.png"), "--set", "tracking.enabled=false"]
    assert knn.main(argv) == 2
    assert "class ids {1000, 2000, 3000}" in caplog.text and not (tmp_path / "m.json").exists()
    # hand cases of the rule: one gap or 1-based ids pass, a declaration covers the span
    assert sparse_class_ids([np.array([0, 2])], declared=None) is None
    assert sparse_class_ids([np.array([1, 2, 3])], declared=None) is None
    assert sparse_class_ids([np.array([0, 4])], declared=None) is not None  # 3 of 5 unused
    assert sparse_class_ids([np.array([0, 4])], declared=5) is None


def test_nan_float_labels_are_refused_as_labels_not_a_traceback(tmp_path: Path) -> None:
    """The sparse-id check ran int() on float labels first: NaN gave a ValueError (exit 1)."""
    from pipeline.artifacts import load_embeddings

    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_x"] = np.ones((4, 3), np.float32)
        arrays[f"{s}_y"] = np.array([0, 1, np.nan, np.inf], np.float32)
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(ArtifactError, match="train_y must be integer class ids"):
        load_embeddings(tmp_path / "f.npz")


def _record_fsyncs_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record, in order, every ``os.fsync`` (the path its descriptor points at) and
    ``os.replace`` (the target) the artifact writers make."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(Path(dst).resolve())))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name descriptors")
def test_a_write_is_flushed_to_disk_before_its_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record_fsyncs_and_renames(monkeypatch)
    target = (tmp_path / "m.json").resolve()
    write_json(target, {"a": 1})
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).parent == target.parent and events[0][1] != str(target)  # the temp
    assert events[1] == ("replace", str(target))
    assert events[2] == ("fsync", str(target.parent))
    assert json.loads(target.read_text()) == {"a": 1}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name descriptors")
def test_an_output_block_flushes_every_file_before_any_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record_fsyncs_and_renames(monkeypatch)
    a, b = (tmp_path / "a.json").resolve(), (tmp_path / "sub" / "b.json").resolve()
    with atomic_outputs():
        write_json(a, {"a": 1})
        write_json(b, {"b": 2})
    kinds = [e[0] for e in events]
    first_replace = kinds.index("replace")
    assert kinds[:first_replace] == ["fsync", "fsync"]  # both staged files, before any rename
    assert {e[1] for e in events if e[0] == "replace"} == {str(a), str(b)}
    assert {e[1] for e in events[kinds.index("replace") :] if e[0] == "fsync"} == {
        str(a.parent),
        str(b.parent),
    }
    assert kinds[-1] == "fsync"


def test_a_nan_in_a_json_output_names_the_key_and_the_file_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"metrics\.json: knn\.per_k\[1\] is not a finite"):
        write_json(path, {"knn": {"per_k": [0.5, float("nan")], "k": 7}})
    with pytest.raises(ValueError, match=r"m\.json: curve\[0, 1\] is not a finite"):
        write_json(tmp_path / "m.json", {"curve": np.array([[1.0, np.inf]])})
    assert not path.exists() and not (tmp_path / "m.json").exists()
    assert list(tmp_path.iterdir()) == []  # no temp file either


def test_codes_packed_big_endian_are_refused_not_read_as_other_bits(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    bits = np.zeros((2, 12), dtype=bool)
    bits[0, 0] = True
    packed = np.packbits(bits, axis=1, bitorder="big")  # bit 0 is byte 0's high bit
    path = tmp_path / "codes.safetensors"
    meta = {"format": "hashaudit.codes/1", "n_bits": "12", "bitorder": "big"}
    save_file({"train": packed, "test": packed}, str(path), metadata=meta)
    with pytest.raises(ArtifactError, match=r"codes\.safetensors: codes packed in bitorder='big'"):
        load_codes(path)
    save_file({"train": packed, "test": packed}, str(path), metadata={**meta, "bitorder": "little"})
    codes, n_bits, _ = load_codes(path)  # read little-endian, as the file now says
    assert n_bits == 12 and codes["train"].shape == (2, 2)


def test_a_hand_edited_fingerprint_that_is_not_text_is_named(tmp_path: Path) -> None:
    # "embeddings_fingerprint": 5 (or a head's "embeddings": 5) was an AttributeError traceback
    from pipeline.artifacts import check_head_embeddings, check_same_embeddings

    emb = synthetic_embeddings()
    where = dict(embeddings_path=tmp_path / "e.safetensors", recorded_in=tmp_path / "knn.json")
    with pytest.raises(ArtifactError, match=r"knn\.json: its embeddings fingerprint is 5, not a"):
        check_same_embeddings(5, emb, **where)  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match=r"config\.json: its 'embeddings' is 5, not the block"):
        check_head_embeddings(
            {"embeddings": 5}, emb, head_dir=tmp_path, embeddings_path=tmp_path / "e.safetensors"
        )
    check_same_embeddings(emb.fingerprint, emb, **where)  # the file's own fingerprint passes
