"""--set with a mapping or null on a section, and YAML 1.1 octal / base-60 numbers: refused with
one line naming the key and the fix, never a silently different configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common import parse_overrides
from pipeline.config import ParamsError, load_params, set_dotted
from tests.conftest import REPO
from tests.pipeline.test_config_errors import knn_main

PARAMS = REPO / "params.yaml"

TRAIN_MAPPING = (
    "--set train: a mapping replaces all of train and would drop the 18 key(s) it leaves out "
    "(methods, bits, max_steps, batch_size, ...); set single keys instead: --set train.epochs=5"
)
TRAIN_NULL = (
    "--set train: train is a section with keys, not a value, and null is not allowed (it would "
    "reset every key to its default); set single keys instead, e.g. --set 'train.methods=[dpsh]'"
)


def knn_outputs(tmp: Path) -> list[Path]:
    return [tmp / "m.json", tmp / "s.csv", tmp / "c.png"]


def loaded(*items: str):
    return load_params(PARAMS, parse_overrides(items))


def error_of(*items: str) -> str:
    with pytest.raises(ParamsError) as err:
        loaded(*items)
    return str(err.value)


def assert_one_line_exit_2(tmp: Path, caplog, message: str, *argv: str) -> None:
    assert knn_main(tmp, *argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [message] and "Traceback" not in caplog.text
    assert not any(p.exists() for p in knn_outputs(tmp))


# --- defect 1: a mapping or null given to a whole section ---------------------------------


def test_set_mapping_on_a_section_is_refused_not_a_silent_reset(tmp_path: Path, caplog) -> None:
    """`--set train={epochs: 5}` replaced the train section: lr, bits, ... fell back to defaults."""
    assert error_of("train={epochs: 5}") == TRAIN_MAPPING
    assert_one_line_exit_2(
        tmp_path, caplog, TRAIN_MAPPING, "--params", str(PARAMS), "--set", "train={epochs: 5}"
    )


def test_set_mapping_refusal_lists_each_leaf_as_a_set_and_nested_drops() -> None:
    assert error_of("train={epochs: 5, lr: 0.01}").endswith(
        "set single keys instead: --set train.epochs=5 --set train.lr=0.01"
    )
    assert error_of("data={sources: {breastmnist: {kind: embeddings, path: x}}}").endswith(
        "would drop the 5 key(s) it leaves out (root, download, limit, val_fraction, ...); set "
        "single keys instead: --set 'data.sources.breastmnist={kind: embeddings, path: x}'"
    )  # data's 5 other keys (sources are replaced whole); the entry stays one item
    assert error_of("train={}") == (
        "--set train: a mapping replaces all of train and would drop the 19 key(s) it leaves out "
        "(methods, bits, epochs, max_steps, ...); set single keys instead: "
        "--set train.<key>=<value>"
    )
    # nested: dpsh's 3 other keys and the 13 other method blocks
    assert error_of("methods={dpsh: {eta: 0.2}}") == (
        "--set methods: a mapping replaces all of methods and would drop the 16 key(s) it leaves "
        "out (dpsh.balance_pairs, dpsh.memory_bank, dpsh.bank_rows, dsh, ...); set single keys "
        "instead: --set methods.dpsh.eta=0.2"
    )


def test_set_mapping_that_drops_nothing_still_works() -> None:
    p = loaded("train.epochs=5")  # the fix the message gives: only epochs changes
    assert p.train.epochs == 5 and p.train.lr == 0.001 and p.train.bits == (12, 24, 36, 48)
    assert p.train.max_steps == 1200 and p.train.patience == 20
    p = loaded("data.sources.breastmnist={kind: medmnist, size: 64}")  # names every key
    assert p.data.sources["breastmnist"].size == 64
    # a data.sources entry is defined whole (its kind is required and decides its keys): a
    # mapping redefines it, as bench/bench_study.py does for pixel embeddings
    p = loaded("data.sources.cifar10={kind: imagefolder, path: /x}")
    assert p.data.sources["cifar10"].kind == "imagefolder" and p.data.sources["cifar10"].id is None
    assert p.data.sources["cifar10"].image_column == "image"  # not params.yaml's img
    p = loaded("data.sources={mine: {kind: embeddings, path: x.npz}}", "data.datasets=[mine]")
    assert list(p.data.sources) == ["mine"]  # so is the whole collection (a dropped entry has
    # no default: a dataset naming it is refused)
    p = loaded("data.sources.mine={kind: embeddings, path: x.npz}")  # a new entry
    assert p.data.sources["mine"].path == "x.npz" and p.data.sources["cifar10"].id == (
        "uoft-cs/cifar10"
    )
    tree: dict = {"train": None}  # an empty section in the file has no key to drop
    set_dotted(tree, "train", {"epochs": 5})
    assert tree == {"train": {"epochs": 5}}


@pytest.mark.parametrize("item", ["train=null", "train=~", "train="])
def test_set_null_on_a_section_is_refused(tmp_path: Path, caplog, item: str) -> None:
    """`--set train=null` read as an empty section: every train key silently at its default."""
    assert error_of(item) == TRAIN_NULL
    assert_one_line_exit_2(tmp_path, caplog, TRAIN_NULL, "--params", str(PARAMS), "--set", item)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "data.sources.breastmnist=null",
            "--set data.sources.breastmnist: data.sources.breastmnist is a section with keys, not "
            "a value, and null is not allowed (it would reset every key to its default); set "
            "single keys instead, e.g. --set data.sources.breastmnist.kind=medmnist",
        ),
        (
            "methods.dpsh=null",
            "--set methods.dpsh: methods.dpsh is a section with keys, not a value, and null is "
            "not allowed (it would reset every key to its default); set single keys instead, "
            "e.g. --set methods.dpsh.eta=0.1",
        ),
        (
            "knn=null",
            "--set knn: knn is a section with keys, not a value, and null is not allowed (it "
            "would reset every key to its default); set single keys instead, e.g. --set knn.k=7",
        ),
    ],
)
def test_set_null_on_entries_and_other_sections_is_refused(item: str, message: str) -> None:
    assert error_of(item) == message


def test_set_null_stays_valid_where_null_is_documented() -> None:
    p = loaded(
        "dp.seed=null",  # OS entropy
        "release.seed=~",  # OS entropy
        "attack.attacks=null",  # every attack that applies
        "data.limit=null",  # all samples
        "train.max_steps=null",  # no step cap
        "dp.lr=null",  # train.lr
        "tracking.uri=null",  # $MLFLOW_TRACKING_URI or the repo's sqlite store
        "methods.dpsh.bank_rows=null",  # all rows
    )
    assert p.dp.seed is None and p.release.seed is None and p.attack.attacks is None
    assert p.data.limit is None and p.train.max_steps is None and p.dp.lr is None
    assert p.tracking.uri is None and p.method_config("dpsh").bank_rows is None
    assert "train.epochs: expected an integer, got None" in error_of("train.epochs=null")


# --- defect 2: YAML 1.1 octal (012 = 10) and base-60 (1:30 = 90) numbers --------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "seed: 0\n",
            "seed: 012\n",
            "7: seed: 012 is a YAML 1.1 octal number (read as 10, not 12); write 12 for the "
            "number or '012' for the text",
        ),
        (
            "  k: 7\n",
            "  k: 1:30\n",
            "6: knn.k: 1:30 is a YAML 1.1 base-60 number (read as 90); write 90 for the "
            "number or '1:30' for the text",
        ),
        (
            "  bits: [12, 24, 36, 48]",
            "  bits: [12, 024, 36, 48]",
            "14: train.bits[1]: 024 is a YAML 1.1 octal number (read as 20, not 24); write 24 "
            "for the number or '024' for the text",
        ),
    ],
)
def test_yaml11_number_in_params_file_is_refused(
    tmp_path: Path, caplog, old: str, new: str, message: str
) -> None:
    text = PARAMS.read_text()
    line = text[: text.index(old)].count("\n") + 1  # the message then gives the column
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}:{line}:{message}"
    assert_one_line_exit_2(tmp_path, caplog, f"{path}:{line}:{message}", "--params", str(path))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "seed=012",
            "--set 'seed=012': the value:1:1: seed: 012 is a YAML 1.1 octal number (read as 10, "
            "not 12); write 12 for the number or '012' for the text",
        ),
        (
            "train.epochs=1:30",
            "--set 'train.epochs=1:30': the value:1:1: train.epochs: 1:30 is a YAML 1.1 base-60 "
            "number (read as 90); write 90 for the number or '1:30' for the text",
        ),
        (
            "train.lr=1:30.5",
            "--set 'train.lr=1:30.5': the value:1:1: train.lr: 1:30.5 is a YAML 1.1 base-60 "
            "number (read as 90.5); write 90.5 for the number or '1:30.5' for the text",
        ),
        (
            "knn.k_sweep=[3, -011]",
            "--set 'knn.k_sweep=[3, -011]': the value:1:5: knn.k_sweep[1]: -011 is a YAML 1.1 "
            "octal number (read as -9, not -11); write -11 for the number or '-011' for the text",
        ),
        (
            "data.sources={010: {kind: medmnist}}",
            "--set 'data.sources={010: {kind: medmnist}}': the value:1:2: data.sources: the key "
            "010 is a YAML 1.1 octal number (read as 8, not 10); write 10 for the number or "
            "'010' for the text",
        ),
    ],
)
def test_yaml11_number_in_set_is_refused(tmp_path: Path, caplog, item: str, message: str) -> None:
    assert error_of(item) == message
    assert_one_line_exit_2(tmp_path, caplog, message, "--params", str(PARAMS), "--set", item)


def test_quoted_hex_underscore_and_yes_no_keep_their_values() -> None:
    p = loaded(
        "backbone.revision='012'",  # quoted: the text
        "seed=0x10",  # hex: 16 in YAML 1.1, YAML 1.2 and Python alike
        "train.val_database=20_000",  # underscores: 20000, as Python reads 20_000
        "train.standardize=no",  # YAML 1.1 booleans stay booleans on bool keys
        "tracking.enabled=on",
        "train.epochs=0b101",  # binary: 5, as Python reads 0b101
        "train.lr=1e-4",
    )
    assert p.backbone.revision == "012" and p.seed == 16 and p.train.val_database == 20000
    assert p.train.standardize is False and p.tracking.enabled is True and p.train.epochs == 5
    assert p.train.lr == 0.0001
    assert loaded("seed=0", "train.epochs=10").seed == 0  # plain 0 and 10 are decimal


def test_zero_padded_numbers_that_every_reader_reads_alike_are_kept() -> None:
    """``07`` is 7 in YAML 1.1 (octal), YAML 1.2 (DVC) and to a person: nothing to refuse."""
    p = loaded("seed=00", "train.epochs=07", "knn.k_sweep=[03, 5]")
    assert p.seed == 0 and p.train.epochs == 7 and p.knn.k_sweep == (3, 5)


def test_a_key_set_again_applies_after_the_overrides_between() -> None:
    # a dict kept the key's first position: size=64 applied before the mapping that replaced
    # the whole entry, which then held the default size 28
    items = [
        "data.sources.x.size=128",
        "data.sources.x={kind: medmnist, flag: breastmnist}",
        "data.sources.x.size=64",
        "data.datasets=[x]",
    ]
    assert list(parse_overrides(items)) == [
        "data.sources.x",
        "data.sources.x.size",
        "data.datasets",
    ]
    assert loaded(*items).data.source("x").size == 64
