"""The attacker's auxiliary records hold no victim's record: a val row whose image the extract
found byte-identical to a train or test image (its ``duplicate_rows``) is that victim's record,
so it is left out of aux (the learned attacks trained on it, then scored their reconstruction of
the same image; membership's shadow pools held a candidate's copy)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import attack
from pipeline.config import load_params
from pipeline.data import stratified_sample
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO

#: val rows 0 and 3 copy train images, val row 5 a test image; train 7 = test 2 concerns no aux row
COPIES = {
    "val": {"train": [0, 3], "test": [5]},
    "train": {"val": [11, 40], "test": [7]},
    "test": {"val": [9], "train": [2]},
}


def _emb(rows: dict | None):
    emb = synthetic_embeddings(n=(160, 60, 60), dim=16)
    if rows is None:
        return emb
    return dataclasses.replace(emb, meta={**emb.meta, "duplicate_rows": json.dumps(rows)})


@pytest.mark.parametrize("aux_size", [None, 30])
def test_aux_leaves_out_copies_of_victim_images(aux_size: int | None, caplog) -> None:
    params = load_params(REPO / "params.yaml", {"attack.aux_size": aux_size})
    with caplog.at_level(logging.WARNING, logger="pipeline.attack"):
        aux, victims, _ = attack.build_records(params, _emb(COPIES), None)
    assert not {0, 3, 5} & set(aux.index.tolist())
    assert len(aux) == (57 if aux_size is None else 30)
    assert len(victims["train"]) == 160 and len(victims["test"]) == 60  # victims untouched
    assert "3 val record(s) (rows 0, 3, 5)" in caplog.text


def test_aux_without_copies_is_the_sample_it_was() -> None:
    """No duplicate rows (or a file that records none): the seeded stratified sample as before."""
    params = load_params(REPO / "params.yaml", {"attack.aux_size": 30})
    want = stratified_sample(_emb(None).y["val"], 30, rng=np.random.default_rng(0))
    for emb in (_emb(None), _emb({"train": {"test": [7]}, "test": {"train": [2]}})):
        aux, _, _ = attack.build_records(params, emb, None)
        assert aux.index.tolist() == want.tolist()


def test_copies_of_names_the_file_s_rows_per_other_split() -> None:
    emb = _emb(COPIES)
    assert np.flatnonzero(attack.copies_of(emb, "val", ("train", "test"))).tolist() == [0, 3, 5]
    assert np.flatnonzero(attack.copies_of(emb, "val", ("train",))).tolist() == [0, 3]
    assert attack.copies_of(_emb(None), "val", ("train",)) is None
    assert not attack.copies_of(emb, "train", ()).any()


@pytest.mark.parametrize(
    "block",
    [
        {"mechanism": "rr", "splits": ["train"]},  # no epsilon_code: a KeyError
        {"mechanism": "kanon", "splits": [], "k": 5},  # no split: a StopIteration
        {"mechanism": "kanon", "splits": ["val"], "k": 5},  # val is the attacker's, never released
        {"mechanism": "kanon", "splits": ["test"], "k": "5"},
    ],
)
def test_a_release_block_without_its_keys_is_named(tmp_path: Path, block: dict) -> None:
    from pipeline.artifacts import ArtifactError, write_json

    write_json(tmp_path / "config.json", {"method": "dpsh", "release": block})
    (tmp_path / "codes.safetensors").write_bytes(b"")
    cfg = load_params(REPO / "params.yaml", {}).attack
    with pytest.raises(ArtifactError, match=r"config\.json's release block needs 'splits'"):
        attack.load_release(tmp_path, tmp_path, None, {}, 12, cfg, emb=None)
