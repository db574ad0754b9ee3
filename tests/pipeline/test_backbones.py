"""Frozen backbones: preprocessing, the tiny-random model, local directories and offline errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneUnavailableError,
    load_backbone,
    preprocess,
    resolve_device,
    resolve_precision,
)
from pipeline.config import BackboneConfig
from tests.conftest import mocked_gpus

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to 0..255 pixel values."""
    return (x * STD + MEAN) * 255.0


def tiny(**kw) -> BackboneConfig:
    return BackboneConfig(
        name="tiny-random", image_size=kw.pop("image_size", 28), device="cpu", **kw
    )


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 20, 20), (4, 20, 20, 1), (4, 20, 20, 3), (4, 20, 20, 4)])
def test_preprocess_shapes(shape: tuple[int, ...]) -> None:
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for mode in ("resize", "pad"):
        out = preprocess(images, image_size=28, resize=mode)
        assert out.shape == (4, 3, 28, 28) and out.dtype == torch.float32


def test_grayscale_becomes_three_equal_channels() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 14, 14), dtype=np.uint8)
    px = pixels(preprocess(images, image_size=14, resize="resize"))
    assert torch.allclose(px[:, 0], px[:, 1], atol=1e-3) and torch.allclose(
        px[:, 1], px[:, 2], atol=1e-3
    )
    assert torch.allclose(px[:, 0], torch.from_numpy(images).float(), atol=1e-3)


def test_pad_keeps_original_pixels_centred_on_black() -> None:
    images = np.random.default_rng(0).integers(1, 256, (3, 28, 28, 3), dtype=np.uint8)
    px = pixels(preprocess(images, image_size=56, resize="pad"))
    centre = px[:, :, 14:42, 14:42]
    assert torch.allclose(centre, torch.from_numpy(images).permute(0, 3, 1, 2).float(), atol=1e-3)
    border = px.clone()
    border[:, :, 14:42, 14:42] = 0.0
    assert border.abs().max() < 1e-3


def test_pad_downscales_a_larger_image_keeping_aspect() -> None:
    image = np.full((60, 30), 200, dtype=np.uint8)
    px = pixels(preprocess([image], image_size=28, resize="pad"))[0, 0]
    assert px.shape == (28, 28)
    assert torch.allclose(
        px[:, 7:21], torch.full((28, 14), 200.0), atol=1e-2
    )  # 28 x 14 after downscaling
    assert px[:, :7].abs().max() < 1e-3 and px[:, 21:].abs().max() < 1e-3


def test_resize_of_a_constant_image_stays_constant() -> None:
    images = np.full((2, 28, 28, 3), 77, dtype=np.uint8)
    px = pixels(preprocess(images, image_size=70, resize="resize"))
    assert px.shape == (2, 3, 70, 70) and torch.allclose(px, torch.full_like(px, 77.0), atol=1e-2)


def test_resize_matches_pil_bicubic() -> None:
    from PIL import Image

    g = np.random.default_rng(0)
    images = g.integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    images[:, :, :14] = 0  # a hard edge, where resampling kernels differ most
    up = pixels(preprocess(images, image_size=70, resize="resize")).permute(0, 2, 3, 1)
    ref = np.stack(
        [np.asarray(Image.fromarray(im).resize((70, 70), Image.BICUBIC)) for im in images]
    )
    assert (up - torch.tensor(ref).float()).abs().max() <= 1.01
    big = g.integers(0, 256, (1, 90, 90, 3), dtype=np.uint8)
    down = pixels(preprocess(big, image_size=28, resize="resize")).permute(0, 2, 3, 1)[0]
    ref = np.asarray(Image.fromarray(big[0]).resize((28, 28), Image.BICUBIC))
    assert (down - torch.tensor(ref).float()).abs().max() <= 1.01
    mid = g.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)  # non-integer scale: up to 2 levels
    up = pixels(preprocess(mid, image_size=224, resize="resize")).permute(0, 2, 3, 1)[0]
    ref = np.asarray(Image.fromarray(mid[0]).resize((224, 224), Image.BICUBIC))
    assert (up - torch.tensor(ref).float()).abs().max() <= 2.01


def test_preprocess_list_of_mixed_shapes_and_bad_input() -> None:
    images = [
        np.zeros((10, 12), np.uint8),
        np.zeros((20, 8, 3), np.uint8),
        np.zeros((9, 9, 4), np.uint8),
    ]
    assert preprocess(images, image_size=16, resize="resize").shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((1, 4, 4), np.float32), image_size=16)
    with pytest.raises(ValueError, match="1, 2, 3 or 4 channels"):
        preprocess(np.zeros((1, 4, 4, 5), np.uint8), image_size=16)


# --------------------------------------------------------------------------------------------
# tiny-random and precision
# --------------------------------------------------------------------------------------------


def test_tiny_random_is_deterministic_frozen_and_sized(caplog: pytest.LogCaptureFixture) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with caplog.at_level("WARNING"):
        a = load_backbone(tiny(), seed=0)
    assert "MEANINGLESS" in caplog.text
    b, c = load_backbone(tiny(), seed=0), load_backbone(tiny(), seed=1)
    ea = a.embed_images(images)
    assert ea.shape == (3, 32) and ea.dtype == torch.float32 and a.dim == 32
    assert torch.equal(ea, b.embed_images(images))
    assert not torch.allclose(ea, c.embed_images(images))
    assert not a.model.training and not any(p.requires_grad for p in a.model.parameters())
    assert a.revision == "tiny-random-seed0" and a.dtype == "fp32" and a.device.type == "cpu"


def test_cls_mean_doubles_the_dimension() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    cls = load_backbone(tiny(), seed=0)
    both = load_backbone(tiny(pooling="cls_mean"), seed=0)
    out = both.embed_images(images)
    assert both.dim == 64 and out.shape == (2, 64)
    assert torch.allclose(out[:, :32], cls.embed_images(images))
    tokens = both.model(pixel_values=both.preprocess(images)).last_hidden_state
    assert torch.allclose(out[:, 32:], tokens[:, 1:].mean(1), atol=1e-5)


def test_bf16_runs_on_cpu() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    fp32 = load_backbone(tiny(), seed=0).embed_images(images)
    bb = load_backbone(tiny(precision="bf16"), seed=0)
    out = bb.embed_images(images)
    assert bb.dtype == "bf16" and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(out, fp32, atol=0.1)


def test_precision_and_device_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        with pytest.raises(
            BackboneUnavailableError, match=r"backbone\.device: cuda is not available"
        ):
            resolve_device("cuda")


def test_auto_precision_skips_bf16_that_the_gpu_only_emulates() -> None:
    """A compute-capability 7.x card (T4, V100) only emulates bf16: ``is_bf16_supported()`` says
    True by default there, but ``auto`` must pick fp32; from 8.0 (A100, H100) it picks bf16."""
    import types
    from unittest import mock

    cuda = torch.device("cuda")
    for major, minor, expected in ((7, 5, "fp32"), (8, 0, "bf16")):
        props = types.SimpleNamespace(major=major, minor=minor, name=f"mocked cc {major}.{minor}")
        with (
            mock.patch("torch.cuda.is_available", return_value=True),
            mock.patch("torch.cuda.current_device", return_value=0),
            mock.patch("torch.cuda.get_device_properties", return_value=props),
            mock.patch("torch.cuda._check_bf16_tensor_supported", return_value=True),
            mock.patch.object(torch.version, "hip", None),
        ):
            assert torch.cuda.is_bf16_supported()  # emulation counts by default
            assert resolve_precision("auto", cuda) == expected, (major, minor)
            assert resolve_precision("bf16", cuda) == "bf16"  # asked for: allowed, emulated
        # decided from the backbone's own device, not the current one: cuda:1 is a 7.5 card
        # while the current device 0 is an 8.0 one (torch's is_bf16_supported asks device 0)
        with mocked_gpus({0: types.SimpleNamespace(major=8, minor=0, name="cc 8.0"), 1: props}):
            assert torch.cuda.is_bf16_supported(including_emulation=False)  # device 0's answer
            got = resolve_precision("auto", torch.device("cuda", 1))
            assert got == expected, ("cuda:1", major, minor)


# --------------------------------------------------------------------------------------------
# hub ids and local directories
# --------------------------------------------------------------------------------------------


def test_uncached_hub_model_offline_fails_fast_with_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # read once at import time
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # ignore any real cache
    t0 = time.perf_counter()
    with pytest.raises(BackboneUnavailableError) as err:
        load_backbone(BackboneConfig(name="facebook/dinov2-base", device="cpu"))
    assert time.perf_counter() - t0 < 20
    msg = str(err.value)
    assert "'facebook/dinov2-base'" in msg and "revision 'main'" in msg
    assert (
        "`hf download facebook/dinov2-base --revision main --local-dir models/dinov2-base` and "
        "set backbone.name: models/dinov2-base"
        in msg
        and "backbone.name: tiny-random" in msg
    )
    # the recommended local layout, not filled yet: no circular "set backbone.name" to itself
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackboneUnavailableError) as err:
        load_backbone(BackboneConfig(name="models/dinov2-base", device="cpu"))
    msg = str(err.value)
    assert f"there is no local folder 'models/dinov2-base' (from {tmp_path})" in msg
    assert "--local-dir models/dinov2-base` and copy the folder here" in msg
    assert "set backbone.name: models/dinov2-base" not in msg


def test_local_directory_round_trip(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    ref = load_backbone(tiny(), seed=3)
    ref.model.save_pretrained(tmp_path / "model")
    local = load_backbone(BackboneConfig(name=str(tmp_path / "model"), image_size=28, device="cpu"))
    assert local.revision == f"local:{tmp_path / 'model'}"  # the name as given, no commit known
    assert torch.allclose(local.embed_images(images), ref.embed_images(images), atol=1e-6)


def test_a_local_folder_records_the_commit_hf_download_wrote_and_checks_a_pinned_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``hf download <id> --revision R --local-dir <dir>`` (the offline fix the errors give)
    records R's commit in ``<dir>/.cache/huggingface/download/config.json.metadata``: it is the
    revision the embeddings record, and a ``backbone.revision`` commit other than it is refused
    (the folder's revision was dropped and its resolved path recorded instead)."""
    folder = tmp_path / "model"
    load_backbone(tiny(), seed=3).model.save_pretrained(folder)
    record = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    record.parent.mkdir(parents=True)
    record.write_text(f'{COMMIT}\n"etag"\n1764400000.0\n')  # huggingface_hub's layout
    cfg = BackboneConfig(name=str(folder), image_size=28, device="cpu")
    assert load_backbone(cfg).revision == COMMIT
    assert load_backbone(dataclasses.replace(cfg, revision=COMMIT)).revision == COMMIT
    other = "f" * 40
    with pytest.raises(BackboneUnavailableError, match=rf"backbone.revision {other}: the local "
                       rf"folder .*model holds commit {COMMIT} \(its hf download record\)"):  # fmt: skip
        load_backbone(dataclasses.replace(cfg, revision=other))
    record.unlink()  # a folder without the record: a pinned revision cannot be checked, said so
    with caplog.at_level(logging.WARNING):
        assert load_backbone(dataclasses.replace(cfg, revision=other)).revision == f"local:{folder}"
    assert f"backbone.revision '{other}' cannot be checked against it and is not recorded" in (
        caplog.text
    )


@pytest.mark.parametrize("saved", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads_in_float32(tmp_path: Path, saved: torch.dtype) -> None:
    """transformers 5 loads a checkpoint in the dtype it was saved in; hashaudit loads float32 and
    leaves bf16 to ``backbone.precision`` (the embeddings metadata records that precision)."""
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    model = load_backbone(tiny(), seed=3).model
    model.to(saved).save_pretrained(tmp_path / "half")
    model.to(torch.float32).save_pretrained(tmp_path / "full")  # the same, half-rounded weights
    half, full = (
        load_backbone(BackboneConfig(name=str(tmp_path / d), image_size=28, device="cpu"))
        for d in ("half", "full")
    )
    assert half.dtype == "fp32"
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}
    assert torch.allclose(half.embed_images(images), full.embed_images(images), atol=1e-6)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline Hugging Face cache holding ``fake/dinov2`` at commit COMMIT, ``main`` -> COMMIT."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--fake--dinov2"
    load_backbone(tiny(), seed=3).model.save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_hub_model_records_the_cached_commit_not_the_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 5 no longer sets ``config._commit_hash``: the commit comes from the snapshot
    folder of the Hugging Face cache the model was loaded from."""
    fake_hub_cache(tmp_path, monkeypatch)
    for revision in ("main", COMMIT):
        bb = load_backbone(
            BackboneConfig(name="fake/dinov2", revision=revision, image_size=28, device="cpu")
        )
        assert bb.revision == COMMIT, revision


def test_hub_model_without_a_known_commit_records_the_revision_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline import backbones

    fake_hub_cache(tmp_path, monkeypatch)
    assert backbones._cached_commit("fake/dinov2", "v1") is None  # no such ref cached
    assert backbones._cached_commit("fake/other", "main") is None  # no such model cached
    monkeypatch.setattr(backbones, "_cached_commit", lambda name, revision: None)
    with caplog.at_level("WARNING"):
        bb = load_backbone(BackboneConfig(name="fake/dinov2", image_size=28, device="cpu"))
    assert bb.revision == "main" and "no commit found for revision 'main'" in caplog.text


def test_image_size_below_the_patch_size_is_refused(tmp_path: Path) -> None:
    """A patch-16 ViT at image_size 14 or 15 sees no patch: refused at load, not a conv2d crash."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=32, patch_size=16,
    )  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    for size in (14, 15):
        with pytest.raises(
            BackboneUnavailableError,
            match=rf"backbone\.image_size: {size} is smaller than the 16-pixel patch .*at least 16",
        ):
            load_backbone(BackboneConfig(name=str(tmp_path / "vit"), image_size=size, device="cpu"))
    bb = load_backbone(BackboneConfig(name=str(tmp_path / "vit"), image_size=16, device="cpu"))
    assert bb.embed_images(np.zeros((1, 28, 28), np.uint8)).shape == (1, 16)


def test_vit_directory_with_interpolated_positions(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    bb = load_backbone(
        BackboneConfig(name=str(tmp_path / "vit"), image_size=56, pooling="cls_mean", device="cpu")
    )
    assert bb.interpolate_pos_encoding and bb.dim == 32
    assert bb.embed_images(np.zeros((2, 40, 40), np.uint8)).shape == (2, 32)


def test_bad_local_directories_and_model_types(tmp_path: Path) -> None:
    from transformers import BertConfig

    with pytest.raises(BackboneUnavailableError, match=r"local model directory .* does not exist"):
        load_backbone(BackboneConfig(name=str(tmp_path / "nope"), device="cpu"))
    (tmp_path / "empty").mkdir()  # or a copy that lost its config.json: named, with the fix
    with pytest.raises(BackboneUnavailableError, match=r"empty holds no config.json, so it is not "
                       r"a \(complete\) transformers model directory; copy the whole folder"):  # fmt: skip
        load_backbone(BackboneConfig(name=str(tmp_path / "empty"), device="cpu"))
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(BackboneUnavailableError, match="'bert' model; hashaudit supports"):
        load_backbone(BackboneConfig(name=str(tmp_path / "bert"), device="cpu"))


def test_incomplete_or_corrupt_weights_are_refused_never_partly_random(tmp_path: Path) -> None:
    """transformers only logs weights a checkpoint lacks and initialises them at random: refused."""
    from safetensors.torch import load_file, save_file

    load_backbone(tiny(), seed=3).model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    full = load_file(weights)
    dropped = sorted(full)[0]
    save_file({k: v for k, v in full.items() if k != dropped}, weights, metadata={"format": "pt"})
    cfg = BackboneConfig(name=str(tmp_path / "m"), image_size=28, device="cpu")
    with pytest.raises(
        BackboneUnavailableError, match=rf"does not set 1 weight\(s\) .*{dropped}.*would be random"
    ):
        load_backbone(cfg)
    save_file(
        {k: v[..., :1].contiguous() if v.ndim else v for k, v in full.items()},
        weights,
        metadata={"format": "pt"},
    )
    with pytest.raises(
        BackboneUnavailableError, match=r"unreadable or do not fit its config\.json"
    ):
        load_backbone(cfg)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(BackboneUnavailableError, match=r"unreadable .*SafetensorError"):
        load_backbone(cfg)


def test_other_runtime_errors_while_loading_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only unreadable or mismatched weights are bad input; e.g. running out of memory is not."""
    import transformers

    load_backbone(tiny(), seed=3).model.save_pretrained(tmp_path / "m")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        load_backbone(BackboneConfig(name=str(tmp_path / "m"), image_size=28, device="cpu"))


def test_extra_checkpoint_weights_are_ignored(tmp_path: Path) -> None:
    """A ViT checkpoint with a pooler (unused: CLS / mean tokens are read) loads."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=28, patch_size=14,
    )  # fmt: skip
    saved = ViTModel(config, add_pooling_layer=True)
    saved.save_pretrained(tmp_path / "vit")
    bb = load_backbone(BackboneConfig(name=str(tmp_path / "vit"), image_size=28, device="cpu"))
    assert bb.embed_images(np.zeros((1, 28, 28), np.uint8)).shape == (1, 16)
    # the encoder's weights are the checkpoint's (read, not initialised afresh); the pooler is not
    want = saved.state_dict()
    got = bb.model.state_dict()
    assert got and all(torch.equal(v, want[k]) for k, v in got.items())
    pooler = {k for k in want if k.startswith("pooler.")}
    assert pooler and not pooler & set(got)


def test_missing_folder_under_a_local_parent_is_named_as_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``owner/model`` stays a hub id (an ``owner`` folder in the working directory does not make
    it a path), but when the hub fails the message says the folder is missing too."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        BackboneUnavailableError, match=r"there is no local folder 'models/dinov2-base'"
    ):
        load_backbone(BackboneConfig(name="models/dinov2-base", device="cpu"))
    with pytest.raises(BackboneUnavailableError) as err:  # no such folder: the hub message only
        load_backbone(BackboneConfig(name="facebook/dinov2-base", device="cpu"))
    assert "no local folder" not in str(err.value)


# --------------------------------------------------------------------------------------------
# the checkpoint's own normalisation (preprocessor_config.json)
# --------------------------------------------------------------------------------------------

GREY = np.full((1, 28, 28, 3), 128, np.uint8)


def tiny_vit_dir(path: Path, preprocessor: dict | None) -> Path:
    """A tiny ``vit`` checkpoint saved with save_pretrained, with ``preprocessor`` as its
    ``preprocessor_config.json`` (none when None)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=28, patch_size=14,
    )  # fmt: skip
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


def test_a_checkpoint_declaring_its_normalisation_gets_it(tmp_path: Path) -> None:
    """A vit checkpoint whose preprocessor_config.json declares mean = std = 0.5 (google/vit-*)
    sees pixel 128 as (128/255 - 0.5) / 0.5, as its own image processor gives it, not the
    ImageNet-normalised value; the embeddings metadata records the normalisation used."""
    from transformers import ViTImageProcessor

    from pipeline.extract import image_metadata

    path = tiny_vit_dir(tmp_path / "vit", None)
    proc = ViTImageProcessor(
        size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    proc.save_pretrained(path)  # the file as transformers writes it
    bb = load_backbone(BackboneConfig(name=str(path), image_size=28, device="cpu"))
    assert bb.image_mean == (0.5, 0.5, 0.5) and bb.image_std == (0.5, 0.5, 0.5)
    assert bb.normalisation == "preprocessor_config.json"
    expected = (128 / 255 - 0.5) / 0.5  # 0.0039216
    px = bb.preprocess(GREY)
    assert torch.allclose(px, torch.full_like(px, expected), atol=1e-6)
    theirs = proc(images=list(GREY), return_tensors="np")["pixel_values"]
    assert np.allclose(px.numpy(), theirs, atol=1e-6)
    ds = SimpleNamespace(task="binary-class", class_names=["a", "b"], n_classes=2, source_info={})
    meta = image_metadata("toy", ds, bb, seed=0, limit=None)  # type: ignore[arg-type]
    assert (
        json.loads(meta["image_mean"]) == [0.5] * 3 and json.loads(meta["image_std"]) == [0.5] * 3
    )
    assert meta["normalisation"] == "preprocessor_config.json"

    with_dinov2 = tmp_path / "dinov2"  # a Dinov2 checkpoint reads it the same way
    load_backbone(tiny(), seed=3).model.save_pretrained(with_dinov2)
    (with_dinov2 / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.25, 0.5, 1.0]})
    )
    bb = load_backbone(BackboneConfig(name=str(with_dinov2), image_size=28, device="cpu"))
    got = bb.preprocess(GREY)[0, :, 0, 0]
    want = [(128 / 255 - m) / s for m, s in ((0.5, 0.25), (0.4, 0.5), (0.3, 1.0))]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)

    (with_dinov2 / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    bb = load_backbone(BackboneConfig(name=str(with_dinov2), image_size=28, device="cpu"))
    px = bb.preprocess(GREY)  # no normalisation, as the checkpoint's processor: 128 / 255
    assert torch.allclose(px, torch.full_like(px, 128 / 255), atol=1e-6)


def test_without_a_declared_normalisation_imagenet_is_used(tmp_path: Path, caplog) -> None:
    """... and a local folder without the file says so (model.save_pretrained alone does not
    write it: a google/vit-* model saved that way was normalised with ImageNet's silently)."""
    from pipeline.extract import image_metadata

    imagenet = torch.tensor(
        [(128 / 255 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    )  # 0.0741, 0.2052, 0.4265
    no_file = tiny_vit_dir(tmp_path / "none", None)
    other_keys = tiny_vit_dir(tmp_path / "size-only", {"size": {"height": 28, "width": 28}})
    for path in (no_file, other_keys):
        bb = load_backbone(BackboneConfig(name=str(path), image_size=28, device="cpu"))
        assert bb.normalisation == "imagenet" and bb.image_mean == (0.485, 0.456, 0.406)
        assert torch.allclose(bb.preprocess(GREY)[0, :, 0, 0], imagenet, atol=1e-5)
    assert f"backbone {no_file}: the folder holds no preprocessor_config.json" in caplog.text
    assert caplog.text.count("the folder holds no") == 1  # the folder with the file: no warning
    bb = load_backbone(tiny(), seed=0)
    assert bb.normalisation == "imagenet"
    assert torch.allclose(bb.preprocess(GREY)[0, :, 0, 0], imagenet, atol=1e-5)
    ds = SimpleNamespace(task="binary-class", class_names=["a", "b"], n_classes=2, source_info={})
    meta = image_metadata("toy", ds, bb, seed=0, limit=None)  # type: ignore[arg-type]
    assert json.loads(meta["image_std"]) == [0.229, 0.224, 0.225]
    assert meta["normalisation"] == "imagenet"


@pytest.mark.parametrize(
    ("preprocessor", "match"),
    [
        ({"image_mean": [0.5] * 3, "image_std": [0.5, 0.0, 0.5]}, r"image_std .* must be > 0"),
        ({"image_mean": [0.5] * 3, "image_std": [0.5, -1, 0.5]}, r"image_std .* must be > 0"),
        ({"image_mean": [0.5, 0.5], "image_std": [0.5] * 3}, r"image_mean is \[0\.5, 0\.5\]"),
        ({"image_mean": [0.5, float("nan"), 0.5], "image_std": [0.5] * 3}, "3 finite numbers"),
        ({"image_mean": [0.5] * 3, "image_std": ["a", 1, 1]}, "3 finite numbers"),
        ({"image_mean": [0.5] * 3}, "declares image_mean but not image_std"),
        ({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1}, "1/255"),
    ],
)
def test_a_bad_declared_normalisation_names_the_file(
    tmp_path: Path, preprocessor: dict, match: str
) -> None:
    path = tiny_vit_dir(tmp_path / "vit", preprocessor)
    with pytest.raises(BackboneUnavailableError, match=match) as err:
        load_backbone(BackboneConfig(name=str(path), image_size=28, device="cpu"))
    assert str(path / "preprocessor_config.json") in str(err.value)
    (path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(BackboneUnavailableError, match="unreadable preprocessor config"):
        load_backbone(BackboneConfig(name=str(path), image_size=28, device="cpu"))


def test_a_cached_hub_checkpoint_declaring_its_normalisation_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_hub_cache(tmp_path, monkeypatch)
    with caplog.at_level("WARNING"):  # offline, file not cached: ImageNet, and a warning says so
        bb = load_backbone(BackboneConfig(name="fake/dinov2", image_size=28, device="cpu"))
    assert bb.normalisation == "imagenet" and "preprocessor_config.json is not in" in caplog.text
    snapshot = tmp_path / "hub" / "models--fake--dinov2" / "snapshots" / COMMIT
    (snapshot / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    bb = load_backbone(BackboneConfig(name="fake/dinov2", image_size=28, device="cpu"))
    assert bb.revision == COMMIT and bb.normalisation == "preprocessor_config.json"
    px = bb.preprocess(GREY)
    assert torch.allclose(px, torch.full_like(px, (128 / 255 - 0.5) / 0.5), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu_in_fp32_and_bf16() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    cpu = load_backbone(tiny(image_size=56, pooling="cls_mean"), seed=0).embed_images(images)
    gpu = load_backbone(
        BackboneConfig(
            name="tiny-random", image_size=56, pooling="cls_mean", device="cuda", precision="fp32"
        ),
        seed=0,
    )
    assert gpu.device.type == "cuda" and gpu.dtype == "fp32"
    out = gpu.embed_images(images)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert torch.allclose(out.cpu(), cpu, atol=1e-3)
    auto = load_backbone(
        BackboneConfig(name="tiny-random", image_size=56, pooling="cls_mean", device="auto"), seed=0
    )
    assert auto.device.type == "cuda" and auto.dtype == "bf16"  # auto precision on a bf16 GPU
    half = auto.embed_images(images).cpu()
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert torch.allclose(half, cpu, atol=0.15)


def test_an_alpha_channel_is_composited_onto_white() -> None:
    """[N, H, W, 4] and [N, H, W, 2] arrays: transparent pixels become white (the alpha was
    dropped, keeping the colour underneath); opaque ones keep their colour, half-transparent
    ones blend."""
    from pipeline.backbones import _to_nchw

    rgba = torch.tensor([[[[0, 160, 0, 0], [200, 10, 10, 255], [0, 0, 0, 128]]]], dtype=torch.uint8)
    out = _to_nchw(rgba)[0, :, 0, :].T.tolist()  # [pixel, channel]
    assert out[0] == [255, 255, 255] and out[1] == [200, 10, 10] and out[2] == [127, 127, 127]
    la = torch.tensor([[[[30, 0], [30, 255]]]], dtype=torch.uint8)
    assert _to_nchw(la)[0, :, 0, :].T.tolist() == [[255] * 3, [30] * 3]


# --------------------------------------------------------------------------------------------
# a hub that answers and refuses: no "not reachable", no offline fix
# --------------------------------------------------------------------------------------------


@pytest.fixture
def refusing_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local stand-in for the Hugging Face hub answering every request with the refusal set in
    ``state["code"]`` (the ``X-Error-Code`` header and status the hub sends), and an empty cache."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import huggingface_hub.constants as hf

    state = {"code": "RepoNotFound"}
    status = {"RepoNotFound": 401, "RevisionNotFound": 404, "GatedRepo": 403}

    class Refuse(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.send_response(status[state["code"]])
            self.send_header("X-Error-Code", state["code"])
            self.send_header("X-Error-Message", f"refused: {state['code']}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _refuse

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "RepoNotFound",
            r"backbone\.name: 'facebook/dinov2-bsae' is not a model on the Hugging Face hub \(or a "
            r"private one this machine has no token for\) \(RepositoryNotFoundError: .*\); fix "
            r"the id \(e\.g\. facebook/dinov2-base\), log in",
        ),
        (
            "RevisionNotFound",
            r"backbone\.revision: 'v9' is no branch, tag or commit of model "
            r"'facebook/dinov2-bsae' on the Hugging Face hub \(RevisionNotFoundError: .*\); set "
            r"backbone\.revision to one listed at https://huggingface\.co/facebook/dinov2-bsae",
        ),
        (
            "GatedRepo",
            r"backbone 'facebook/dinov2-bsae': the Hugging Face hub refuses access to this gated "
            r"model \(GatedRepoError: .*\); accept its terms .* and log in \(`hf auth login`",
        ),
    ],
)
def test_a_model_or_revision_the_hub_refuses_is_named_not_called_unreachable(
    refusing_hub: dict, code: str, expected: str
) -> None:
    """A typo in backbone.name or backbone.revision (or a gated model) on a hub that answers: the
    message said the hub was not reachable and told the user to run with network access, which
    they had."""
    refusing_hub["code"] = code
    cfg = BackboneConfig(name="facebook/dinov2-bsae", revision="v9", image_size=28, device="cpu")
    with pytest.raises(BackboneUnavailableError, match=expected) as err:
        load_backbone(cfg)
    msg = str(err.value)
    assert "not reachable" not in msg and "network access" not in msg and "tiny-random" not in msg


def test_an_invalid_hub_id_is_named_not_called_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backbone.name: "face book/dinov2"`` (a space inside; a leading or trailing one is refused
    when the params are read) is no hub id: offline or not, no cache or network can fix it."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    for name in ("face book/dinov2", "facebook/dinov2 base"):
        with pytest.raises(BackboneUnavailableError) as err:
            load_backbone(BackboneConfig(name=name, device="cpu"))
        msg = str(err.value)
        assert msg.startswith(
            f"backbone.name: {name!r} is neither a local folder (from {tmp_path}) nor a valid "
            "Hugging Face model id (HFValidationError: "
        )
        assert msg.endswith(
            "; fix the name (an id is owner/model, e.g. facebook/dinov2-base, without spaces), or "
            "point it at a local model folder"
        )
        assert "not reachable" not in msg and "hf download" not in msg
