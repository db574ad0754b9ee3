"""Review of the hashing interface (hashers/base.py, registry.py, devices.py): inputs that crashed
inside torch, or passed and gave wrong results, now work or fail naming the value and the fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hashers import registry
from hashers.base import EmbeddingSet, HashingError, HeadSpec
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters

DIM, BITS, C = 16, 16, 3


def spec(**kw: object) -> HeadSpec:
    return HeadSpec(**{"in_dim": DIM, "n_bits": BITS, "n_classes": C, "hidden_dims": (32,), **kw})


@pytest.mark.parametrize("name", ["dpsh", "csq", "dshgan"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_bool_and_integer_labels_train_the_head_float_labels_train(
    name: str, dtype: torch.dtype
) -> None:
    """EmbeddingSet documents bool and integer 0/1 labels as passing; fit then failed inside the
    loss ("addmm_impl_cpu_" not implemented for 'Bool' in 9 of 11 trainable methods; CSQ and
    DSH-GAN with int64 too). 0/1 in any dtype are the same labels: the same head comes out."""
    train = gaussian_clusters(60, seed=1, dim=DIM, n_classes=C, spread=3.0)
    val = gaussian_clusters(30, seed=2, dim=DIM, n_classes=C, spread=3.0)
    cfg = FitConfig(epochs=2, batch_size=32, patience=5, val_queries=30, progress=False, seed=3)
    codes = []
    for y_dtype in (torch.float32, dtype):
        sets = [EmbeddingSet(s.x, s.y.to(y_dtype)) for s in (train, val)]
        method = registry.build(name, spec(dropout=0.0), seed=3)
        fit(method, *sets, config=cfg)
        codes.append(method.encode(val.x))
    assert torch.equal(codes[0], codes[1])
    # stored as the float32 labels they are (exact)
    assert sets[0].y.dtype == torch.float32 and torch.equal(sets[0].y, train.y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_embeddings_of_another_dtype_are_refused_naming_it(dtype: torch.dtype) -> None:
    """float64 embeddings (torch.from_numpy of numpy's default) passed, and fit failed inside the
    first layer: 'mixed dtype (CPU): all inputs must share same datatype'."""
    x = torch.zeros(4, DIM, dtype=dtype)
    with pytest.raises(
        HashingError, match=rf"embeddings must be float32, got {dtype}; .*x\.float\(\)"
    ):
        EmbeddingSet(x, torch.eye(C)[[0, 1, 2, 0]])
    assert EmbeddingSet.from_numpy(x.numpy(), np.eye(C)[[0, 1, 2, 0]]).x.dtype == torch.float32


def test_encode_refuses_a_batch_size_below_one_and_inputs_of_another_shape() -> None:
    """batch_size=-1 returned zero codes for 5 rows (range() with a negative step is empty), a
    [2, 5, D] input gave codes [2, 5, K], a [D] vector codes [K]."""
    method = registry.build("dpsh", spec(), seed=0)
    x = gaussian_clusters(5, seed=0, dim=DIM, n_classes=C).x
    full = method.encode(x)
    assert full.shape == (5, BITS)
    assert torch.equal(method.encode(x, batch_size=1), full)  # batching changes no code
    for bad in (-1, 0, 2.5):
        with pytest.raises(
            HashingError, match=rf"dpsh: encode batch_size={bad} must be an integer >= 1"
        ):
            method.encode(x, batch_size=bad)  # type: ignore[arg-type]
    for shape in ((2, 5, DIM), (DIM,), (5, DIM + 1)):
        with pytest.raises(
            HashingError,
            match=rf"encode takes embeddings \[N, {DIM}\] .*got shape {re.escape(str(shape))}",
        ):
            method.encode(torch.zeros(shape))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"hidden_dims": 512}, r"hidden_dims=512 must be a sequence of hidden-layer widths"),
        (
            {"hidden_dims": (16.0,)},
            r"hidden_dims\[0\]=16\.0: every hidden width must be an integer",
        ),
        ({"hidden_dims": (True,)}, r"hidden_dims\[0\]=True"),
        ({"n_bits": 16.0}, r"n_bits=16\.0 must be an integer"),
        ({"n_bits": True}, r"n_bits=True must be an integer"),
        ({"in_dim": 16.0}, r"in_dim=16\.0 must be an integer"),
        ({"n_classes": 3.5}, r"n_classes=3\.5 must be an integer"),
        ({"dropout": "0.1"}, r"dropout='0\.1' must be a number in \[0, 1\)"),
        ({"standardize": "false"}, r"standardize='false' must be True or False"),
    ],
)
def test_head_spec_refuses_values_of_the_wrong_type(kw: dict, message: str) -> None:
    """They failed inside torch ("'int' object is not iterable", "empty(): argument 'size' must
    be tuple of ints") or passed: n_classes=3.5, and standardize="false" (a true string)."""
    with pytest.raises(HashingError, match=message):
        spec(**kw)


def test_head_spec_takes_numpy_integers_and_lists_as_python_values() -> None:
    s = HeadSpec(in_dim=np.int64(DIM), n_bits=np.int32(BITS), n_classes=C, hidden_dims=[8, 4])
    assert (s.in_dim, s.n_bits, s.hidden_dims) == (DIM, BITS, (8, 4))
    assert type(s.in_dim) is int and type(s.n_bits) is int and isinstance(s.hidden_dims, tuple)
    hash(s)  # a frozen spec is hashable (a list inside was not)


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "", "meta", "xpu", "hip"])
def test_an_unknown_device_name_is_an_error_naming_the_key(name: str) -> None:
    """torch's parse error ('Expected one of cpu, cuda, ipu, xpu, ... device type at start of
    device string: gpu') named no setting; meta, xpu and hip were accepted and failed later inside
    torch (meta: "Cannot copy out of meta tensor")."""
    from hashers.devices import resolve_device

    with pytest.raises(
        HashingError,
        match=rf"train\.device: '{name}' is not a device hashaudit runs on; use auto, cpu, cuda",
    ):
        resolve_device(name)
    with pytest.raises(HashingError, match=r"^backbone\.device: "):
        resolve_device(name, key="backbone.device")
    assert resolve_device("cpu") == torch.device("cpu")


def test_build_takes_numpy_integer_seeds_and_refuses_a_negative_one() -> None:
    """registry.build(seed=np.int64(3)) failed in torch ('an integer is required'); seed -1 built
    the head of seed 2**64 - 1 (torch wraps negative seeds)."""
    a = registry.build("dpsh", spec(), seed=np.int64(3)).state_dict()
    b = registry.build("dpsh", spec(), seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(
            HashingError, match=rf"seed={bad!r}: use an integer from 0 to 2\*\*64 - 1"
        ):
            registry.build("dpsh", spec(), seed=bad)
    registry.build("dpsh", spec(), seed=2**63)  # a derived seed past 2**63 (shadow heads) passes
