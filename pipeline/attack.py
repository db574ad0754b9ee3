"""Stage ``attack``: privacy attacks on one released head (or on the float embeddings, the control).

Two modes, one per DVC stage:

* ``attack-float@<ds>`` (no ``--method``; MLflow run ``attack@<ds>-float``): builds the linkage
  gallery once per dataset — the victims (train and test records) re-acquired at every perturbation
  strength (images perturbed and re-embedded by the backbone, or for embeddings-only sources seeded
  noise at an SNR) — writes it to ``--gallery``, and runs every attack on the float embeddings (the
  leaky control). The gallery's metadata and the metrics JSON record the embeddings' fingerprint.
* ``attack@<ds>-<method>-<bits>``: loads the trained head (queried as a black box: embeddings in,
  codes out), checks it against the embeddings and its released codes (and the label it was
  trained without against ``attack.withhold_label``), checks that the float control (metrics and
  gallery) comes from the same embeddings, runs every attack on the codes and puts the float
  control's number beside each (``<name>_float``).
* ``attack_rr@…`` / ``attack_kanon@…`` (``--release``, the output of ``release_rr`` /
  ``release_kanon``): the same attacks with the victims' codes as published by the release
  mechanism (randomised response at ε_code, or k-anonymised) instead of the head's output; the
  attacker's own aux codes pass through the public mechanism (:class:`privacy.base.MechanismRelease`),
  the gallery is hashed by the head as before, membership on the (unchanged) head is skipped. Victims
  whose codes the mechanism left untouched (``release.apply_to``) are attacked with clean aux codes
  (:func:`attack_by_publication`).
* ``attack_dp@<ds>-<method>-<bits>-eps<ε>``: a DP-SGD head (``train_dp``'s output) attacked like any
  head; its membership shadows train with DP-SGD at the head's recorded guarantee
  (:func:`dp_shadow_trainer`).

Threat model and metric meanings: ``privacy/THREAT_MODEL.md``. Every output path is checked
writable before any work, and the outputs land together only after every attack finished (no
partial output); MLflow gets the aggregate numbers only — never images,
embeddings, codes or per-record values. Reconstructed images are written only with
``attack.save_reconstructions: true``, to ``--reconstructions`` (not tracked by DVC, never MLflow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import sources, tracking
from pipeline.artifacts import (
    ArtifactError,
    EmbeddingsFile,
    atomic_outputs,
    check_head_embeddings,
    check_same_embeddings,
    check_writable,
    load_codes,
    load_embeddings,
    load_head,
    load_head_codes,
    read_json,
    reported_fingerprint,
    write_bytes,
    write_csv,
)
from pipeline.common import base_parser, cpu_seconds, load, run_main
from pipeline.config import (
    MAX_STRENGTHS,
    AttackConfig,
    Params,
    ParamsError,
    parse_dataclass,
    to_dict,
)
from pipeline.data import DUPLICATES_KEY, IMAGES_DIGEST_KEY, ImagesDigest, stratified_sample
from pipeline.release import release_provenance
from pipeline.train import recorded_class_names, withhold_label
from privacy import registry
from privacy.base import Attack, CodeRelease, FloatRelease, MechanismRelease, Records, Release
from privacy.errors import PrivacyError
from retrieval.codes import pack_bits, unpack_bits

log = logging.getLogger(__name__)

VICTIMS = ("train", "test")
GALLERY_FORMAT = "hashaudit.attack-gallery/1"


# --------------------------------------------------------------------------------------------
# data preparation: who holds what
# --------------------------------------------------------------------------------------------


def attribute_target(
    emb: EmbeddingsFile, split: str, column: int | None, aux_split: str
) -> np.ndarray:
    """The attribute the attacks predict: the class id; for multi-label sources the withheld
    finding (0/1), or without one the finding most frequent in the aux split."""
    if not emb.multilabel:
        return emb.y[split].astype(np.int64)
    if column is None:
        column = int(np.argmax(emb.y[aux_split].sum(axis=0)))
    return emb.y[split][:, column].astype(np.int64)


Images = np.ndarray | list[np.ndarray]  # one array, or a list where sizes differ (image folders)


def load_images(params: Params, dataset: str, emb: EmbeddingsFile) -> dict[str, Images] | None:
    """uint8 images per split in the embeddings' row order (an array, or a list of arrays where the
    source mixes sizes or channel counts), or None for embeddings-only sources."""
    source = params.data.source(dataset)
    if not sources.yields_images(source.kind):
        return None
    # which images each row holds depends on the seed and limit of the carve / subsample: a source
    # reloaded with others can give the same label sequence with other records' images, so the
    # images are reloaded with the values the extract recorded (files without them: these params)
    seed, data = params.seed, params.data
    recorded_seed, recorded_limit = emb.meta.get("seed"), emb.meta.get("limit")
    try:
        if recorded_seed is not None:
            seed = int(recorded_seed)
        if recorded_limit is not None:
            data = dataclasses.replace(
                data, limit=None if recorded_limit == "null" else int(recorded_limit)
            )
    except ValueError:
        raise ArtifactError(
            f"{dataset}: the embeddings file records seed={recorded_seed!r}, "
            f"limit={recorded_limit!r}, not integers (limit may be 'null'); re-run the extract "
            "stage"
        ) from None
    if (seed, data.limit) != (params.seed, params.data.limit):
        log.info(
            "%s: reloading the images with the extract's seed=%d, data.limit=%s (these params "
            "say seed=%d, data.limit=%s) so that each row keeps its own image",
            dataset,
            seed,
            data.limit,
            params.seed,
            params.data.limit,
        )
    ds = sources.load(dataset, source, data, seed=seed)
    out = {}
    for split in ("train", "val", "test"):
        sp = ds.splits[split]
        if len(sp) != len(emb.x[split]) or not np.array_equal(
            np.asarray(sp.labels).reshape(emb.y[split].shape), emb.y[split]
        ):
            raise ArtifactError(
                f"{dataset}: the {split} images ({len(sp)}) do not match the embeddings file "
                f"({len(emb.x[split])} rows) row for row; re-run the extract stage with these params"
            )
        arr = sp.as_array()
        if arr is None:
            batch = sp.get_batch(np.arange(len(sp)))
            arr = np.stack(batch) if len({im.shape for im in batch}) <= 1 else batch
        out[split] = arr
    check_images_digest(dataset, emb, out)
    return out


def check_images_digest(dataset: str, emb: EmbeddingsFile, images: dict[str, Images]) -> None:
    """Refuse reloaded images that are not those the embeddings were made from: the extract
    records a digest of every split's images (:class:`pipeline.data.ImagesDigest`); a file
    replaced since under the same name and class keeps counts and labels but would put another
    image beside a row's embedding (linkage gallery, reconstruction targets). Embeddings files
    written before the digest existed are matched by counts and labels only."""
    recorded = emb.meta.get(IMAGES_DIGEST_KEY)
    if recorded is None:
        log.info(
            "%s: the embeddings file records no image digest (written before 2026-11-29); the "
            "reloaded images are matched to its rows by count and labels only",
            dataset,
        )
        return
    try:
        want = json.loads(recorded)
        want = {s: str(want[s]) for s in images}
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(
            f"{dataset}: the embeddings file's {IMAGES_DIGEST_KEY} is not a JSON object with "
            f"every split ({recorded[:80]!r}); re-run the extract stage"
        ) from None
    for split, arr in images.items():
        digest = ImagesDigest()
        digest.update(arr)
        if digest.hexdigest() != want[split]:
            raise ArtifactError(
                f"{dataset}: the {split} images the source holds now are not those the "
                f"embeddings were made from (images SHA-256 {digest.hexdigest()[:12]}…, recorded "
                f"{want[split][:12]}…): an image changed since extract under the same name and "
                "class; re-run the extract stage (dvc repro)"
            )


def _shapes(images: Images) -> list[tuple[int, ...]]:
    if isinstance(images, np.ndarray):
        return [images.shape[1:]] * len(images)
    return [im.shape for im in images]


def common_images(
    images: dict[str, Images], size: tuple[int, int] | None
) -> tuple[dict[str, np.ndarray], tuple[int, int, int]]:
    """Every split's images at one shape (``privacy.reconstruction.common_shape``): the decoder's
    target and what PSNR/SSIM compare; the linkage gallery keeps the native images."""
    from privacy.reconstruction import common_shape, to_common_shape

    shape = common_shape((s for imgs in images.values() for s in _shapes(imgs)), size)
    out = {split: to_common_shape(imgs, shape) for split, imgs in images.items()}
    resized = sum(1 for imgs in images.values() for s in _shapes(imgs) if (s[0], s[1]) != shape[:2])
    if resized:
        log.info(
            "reconstruction: %d images resized to the common %dx%d (H x W), %d channel(s)",
            resized,
            *shape,
        )
    return out, shape


class _ListReader:
    """An :class:`pipeline.data.ImageReader` over images of different sizes held in memory."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: Any) -> list[np.ndarray]:
        return [self.images[int(i)] for i in indices]


def build_records(
    params: Params, emb: EmbeddingsFile, images: dict[str, np.ndarray] | None
) -> tuple[Records, dict[str, Records], EmbeddingsFile]:
    """(aux, victims by group, embeddings with any withheld finding removed from the labels);
    ``images``: one array per split, all at one shape (:func:`common_images`)."""
    cfg = params.attack
    trained, column = withhold_label(emb, cfg.withhold_label)
    aux_split = cfg.aux_split
    recs: dict[str, Records] = {}
    for split in (aux_split, *VICTIMS):
        rows = np.arange(len(emb.x[split]))
        recs[split] = Records(
            split=split,
            index=rows,
            x=emb.x[split].astype(np.float32),
            y=attribute_target(emb, split, column, aux_split),
            y_multihot=trained.multihot(split),
            images=None if images is None else images[split],
            train_copy=train_copies(emb, split),
        )
    aux = recs[aux_split]
    # an aux row whose image is a victim's (byte-identical, the extract's duplicate_rows) is that
    # victim's record: the learned attacks would train on it and then score it
    copies = copies_of(emb, aux_split, VICTIMS)
    kept = np.arange(len(aux)) if copies is None else np.flatnonzero(~copies)
    if len(kept) < len(aux):
        shown = np.flatnonzero(copies)
        log.warning(
            "%s: %d %s record(s) (rows %s) hold an image byte-identical to a train or test "
            "image (the extract's duplicate_rows): left out of the attacker's auxiliary records, "
            "which hold no victim's record",
            emb.meta.get("dataset", "embeddings"),
            len(shown),
            aux_split,
            ", ".join(map(str, shown[:5])) + (", ..." if len(shown) > 5 else ""),
        )
        aux = aux.subset(kept)
    if cfg.aux_size is not None and cfg.aux_size < len(aux):
        rng = np.random.default_rng(cfg.seed)
        aux = aux.subset(stratified_sample(emb.y[aux_split][kept], cfg.aux_size, rng=rng))
    return aux, {g: recs[g] for g in VICTIMS}, trained


def train_copies(emb: EmbeddingsFile, split: str) -> np.ndarray | None:
    """bool ``[N]``: the rows of ``split`` whose image the extract found byte-identical to a
    training image (its ``duplicate_rows``; all False for train itself); None when the file does
    not say (embeddings-only sources, files written before 2026-11-29)."""
    return copies_of(emb, split, () if split == "train" else ("train",))


def copies_of(emb: EmbeddingsFile, split: str, others: tuple[str, ...]) -> np.ndarray | None:
    """bool ``[N]``: the rows of ``split`` whose image the extract found byte-identical to an
    image of one of the splits ``others`` (its ``duplicate_rows``); None when the file does not
    say (embeddings-only sources, files written before 2026-11-29)."""
    recorded = emb.meta.get(DUPLICATES_KEY)
    if recorded is None:
        return None
    n = len(emb.x[split])
    mask = np.zeros(n, dtype=bool)
    if not others:
        return mask
    try:
        listed = json.loads(recorded).get(split, {})
        for other in others:
            idx = np.asarray(listed.get(other, []), dtype=np.int64)
            if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= n)):
                raise ValueError(f"rows outside 0..{n - 1}")
            mask[idx] = True
    except (ValueError, TypeError, AttributeError) as err:
        raise ArtifactError(
            f"{emb.meta.get('dataset', 'embeddings')}: the embeddings file's {DUPLICATES_KEY} is "
            f"not a JSON object of row lists for its {n} {split} rows ({err}); re-run the "
            "extract stage"
        ) from None
    return mask


def select_attacks(cfg: AttackConfig, has_images: bool) -> list[str]:
    """The attacks to run: ``attack.attacks``, or every registered one that applies."""
    if cfg.attacks is None:
        names = registry.names()
        if not has_images:
            log.info("reconstruction skipped: the source has no images (embeddings-only)")
            names = [n for n in names if n != "reconstruction"]
        return names
    if "reconstruction" in cfg.attacks and not has_images:
        raise PrivacyError(
            "attack.attacks: 'reconstruction' needs images but this source is embeddings-only "
            "(kind: embeddings); drop it from attack.attacks or set attack.attacks: null"
        )
    return list(cfg.attacks)


# --------------------------------------------------------------------------------------------
# the linkage gallery
# --------------------------------------------------------------------------------------------


def _seed(cfg: AttackConfig, split: str, i: int) -> int:
    return cfg.seed * 2 * MAX_STRENGTHS + (0 if split == "train" else MAX_STRENGTHS) + i


#: embeddings metadata key -> the params key that sets it (the gallery's backbone must match)
GALLERY_BACKBONE_KEYS = {
    "backbone": "backbone.name",
    "image_size": "backbone.image_size",
    "resize": "backbone.resize",
    "pooling": "backbone.pooling",
    "revision": "backbone.revision",
    "normalisation": "backbone.name (its preprocessor_config.json)",
}


def check_gallery_backbone(config: Any, meta: Mapping[str, str], *, loaded: Any) -> None:
    """The backbone that re-embeds the perturbed victims must be the one extract ran (the
    embeddings' metadata): another image size, pooling or checkpoint puts the gallery in another
    space, and linkage falls to chance without a word. ``loaded`` None: the params-level keys only
    (before a model is loaded); a loaded :class:`~pipeline.backbones.Backbone`: also its resolved
    revision and normalisation. Keys an older file lacks are not compared."""
    if loaded is None:
        now = {
            "backbone": config.name,
            "image_size": str(config.image_size),
            "resize": config.resize,
            "pooling": config.pooling,
        }
    else:
        now = {
            "backbone": loaded.name,
            "image_size": str(loaded.image_size),
            "resize": loaded.resize,
            "pooling": loaded.pooling,
            "revision": loaded.revision,
            "normalisation": loaded.normalisation,
        }
    recorded = dict(meta)
    if str(recorded.get("revision", "")).startswith("/"):  # a local folder, before 0858295
        recorded.pop("revision")
    # precision is not compared (auto: bf16 on a GPU, fp32 on a CPU; it does not move the
    # gallery to another space)
    differ = [k for k, v in now.items() if recorded.get(k) is not None and recorded[k] != v]
    if differ:
        shown = "; ".join(
            f"{GALLERY_BACKBONE_KEYS[k]}: {now[k]!r} now, {recorded[k]!r} at extract"
            for k in differ
        )
        raise ArtifactError(
            f"the backbone that would re-embed the linkage gallery is not the one that made the "
            f"embeddings ({shown}); run attack with the backbone params extract ran with, or "
            "re-run extract with these (dvc repro keeps them in step)"
        )


def build_gallery(
    params: Params,
    victims: dict[str, Records],
    images: dict[str, Images] | None,
    meta: Mapping[str, str],
) -> tuple[str, dict[str, dict[float, np.ndarray]]]:
    """Victims re-acquired at every strength: ``(kind, {split: {strength: embeddings}})``, from the
    native images (each perturbed at its own size where sizes differ), by the backbone the
    embeddings' metadata ``meta`` records (:func:`check_gallery_backbone`)."""
    from privacy.perturb import noisy_embeddings, perturb_image_list, perturb_images

    cfg = params.attack
    gallery: dict[str, dict[float, np.ndarray]] = {}
    if images is None:
        for split, rec in victims.items():
            gallery[split] = {
                s: noisy_embeddings(rec.x, s, seed=_seed(cfg, split, i))
                for i, s in enumerate(cfg.snrs_db)
            }
        return "snr_db", gallery
    from pipeline.backbones import load_backbone
    from pipeline.data import ImageSplit
    from pipeline.extract import embed_images

    check_gallery_backbone(params.backbone, meta, loaded=None)  # before loading a model
    backbone = load_backbone(params.backbone, seed=params.seed)
    check_gallery_backbone(params.backbone, meta, loaded=backbone)
    for split, rec in victims.items():
        gallery[split] = {}
        for i, s in enumerate(cfg.strengths):
            native = images[split]
            if isinstance(native, np.ndarray):
                moved = ImageSplit(
                    labels=rec.y, images=perturb_images(native, s, seed=_seed(cfg, split, i))
                )
            else:
                perturbed = perturb_image_list(native, s, seed=_seed(cfg, split, i))
                moved = ImageSplit(labels=rec.y, reader=_ListReader(perturbed))
            gallery[split][s] = embed_images(
                backbone,
                moved,
                batch_size=cfg.backbone_batch_size,
                desc=f"gallery {split} s={s}",
            )
    return "strength", gallery


def save_gallery(
    path: Path, kind: str, gallery: dict[str, dict[float, np.ndarray]], meta: dict
) -> None:
    from safetensors.numpy import save

    tensors, strengths = {}, {}
    for split, by_s in gallery.items():
        strengths[split] = sorted(by_s)
        for i, s in enumerate(strengths[split]):
            tensors[f"{split}_{i}"] = np.ascontiguousarray(by_s[s], dtype=np.float32)
    md = {k: str(v) for k, v in meta.items()}
    md.update(format=GALLERY_FORMAT, kind=kind, strengths=json.dumps(strengths))
    write_bytes(path, save(tensors, metadata=md))


def load_gallery(
    path: Path, dataset: str = "<dataset>"
) -> tuple[str, dict[str, dict[float, np.ndarray]], dict[str, str]]:
    """(kind, ``{split: {strength: embeddings}}``, metadata) of a gallery :func:`save_gallery`
    wrote. A missing, truncated or corrupt file, or one that lacks an entry, is an ArtifactError
    naming the file and the stage that rebuilds it."""
    from safetensors import SafetensorError, safe_open

    fix = f"re-run the attack-float@{dataset} stage (dvc repro) to rebuild it"
    if not path.is_file():
        raise ArtifactError(
            f"{path}: gallery not found; run the attack-float@{dataset} stage first"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            md = dict(f.metadata() or {})
            if md.get("format") != GALLERY_FORMAT:
                raise ArtifactError(
                    f"{path}: not an attack gallery (format={md.get('format')!r}); {fix}"
                )
            if "kind" not in md or "strengths" not in md:
                raise ArtifactError(f"{path}: gallery metadata lacks 'kind' or 'strengths'; {fix}")
            strengths = json.loads(md["strengths"])
            if not isinstance(strengths, dict) or not all(
                isinstance(ss, list) and all(isinstance(v, (int, float)) for v in ss)
                for ss in strengths.values()
            ):
                raise ArtifactError(f"{path}: malformed gallery 'strengths' metadata; {fix}")
            gallery = {
                split: {float(s): f.get_tensor(f"{split}_{i}") for i, s in enumerate(ss)}
                for split, ss in strengths.items()
            }
    except ArtifactError:
        raise
    except (SafetensorError, OSError, ValueError) as err:  # truncated, corrupt, a missing tensor
        raise ArtifactError(f"{path}: unreadable attack gallery ({err}); {fix}") from err
    return md["kind"], gallery, md


# --------------------------------------------------------------------------------------------
# the head as a black box
# --------------------------------------------------------------------------------------------


def rebuild_head(head_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The trained :class:`HashingMethod` from ``head.safetensors`` + ``config.json``."""
    from hashers import registry as methods
    from hashers.base import HeadSpec

    state, config = load_head(head_dir)
    cls = methods.get(config["method"])
    spec_raw = dict(config["head_spec"])
    spec_raw["hidden_dims"] = tuple(spec_raw.get("hidden_dims", ()))
    spec = HeadSpec(**spec_raw)
    mcfg = parse_dataclass(cls.Config, config.get("method_config", {}), "method_config")
    method = methods.build(config["method"], spec, mcfg, seed=int(config.get("seed", 0)))
    method.load_state_dict(state)
    method.eval()
    return method, config


def check_head(
    head_dir: Path,
    head_config: dict,
    emb: EmbeddingsFile,
    method: Any,
    bits: int,
    *,
    embeddings_path: Path,
) -> None:
    """Head, codes and embeddings must belong together (backbone, pooling, dimension and content
    fingerprint, as evaluate checks), and the codes the head gives the embeddings must be the
    released ones."""
    check_head_embeddings(head_config, emb, head_dir=head_dir, embeddings_path=embeddings_path)
    codes, n_bits, codes_meta = load_head_codes(head_dir)
    check_same_embeddings(
        codes_meta.get("fingerprint"),
        emb,
        embeddings_path=embeddings_path,
        recorded_in=head_dir / "codes.safetensors",
    )
    if method.spec.n_bits != bits:
        raise ArtifactError(
            f"{head_dir}: the head has {method.spec.n_bits} bits, --bits says {bits}; pass --bits "
            f"{method.spec.n_bits}, or the folder of the {bits}-bit head"
        )
    if n_bits != bits:
        raise ArtifactError(
            f"{head_dir / 'codes.safetensors'}: codes have {n_bits} bits, the head {bits}; the "
            "folder mixes files of two train runs: re-run its train stage"
        )
    release = CodeRelease.from_head(method)
    for split in VICTIMS:
        if not np.array_equal(pack_bits(release.encode(emb.x[split])), codes[split]):
            raise ArtifactError(
                f"{head_dir}: the head does not reproduce its released {split} codes from these "
                "embeddings (head and embeddings come from different runs); re-run train (dvc repro)"
            )


def _withheld_name(emb: EmbeddingsFile, column: Any) -> str:
    if column is None:
        return "no label withheld"
    # unreadable class_names (a file given straight to a stage) name no column: the index alone
    names, _ = recorded_class_names(emb.meta, emb.n_classes)
    known = isinstance(column, int) and 0 <= column < len(names)
    name = f" ({names[column]!r})" if known else ""
    return f"label column {column!r}{name} withheld"


def check_withheld(
    head_config: dict, emb: EmbeddingsFile, column: int | None, label: Any, *, head_dir: Path
) -> None:
    """The head must have been trained with the label withheld that ``attack.withhold_label``
    (``label``, resolved to ``column``) names: its shadow heads train on the same label columns
    and the attribute attack predicts the finding the head never saw."""
    recorded = (head_config.get("embeddings") or {}).get("withheld_label")
    if recorded != column:
        raise ArtifactError(
            f"{head_dir / 'config.json'}: the head was trained with "
            f"{_withheld_name(emb, recorded)}, but attack.withhold_label={label!r} means "
            f"{_withheld_name(emb, column)}; set attack.withhold_label to the head's setting, or "
            "re-run its train / train_dp stage with this one (dvc repro)"
        )


def _withheld_tag(column: int | None) -> str:
    """The withheld label column as the gallery's (string) metadata records it."""
    return "none" if column is None else str(column)


#: the attack settings the float control's numbers depend on besides the gallery's levels: the
#: victims' and the attacker's records and the reconstruction size. Not: which attacks run (a
#: head's run may ask for a subset), the membership settings (no membership attack on float
#: embeddings), withhold_label (checked on its own), what is saved and how fast.
_IN_CONTROL = ("aux_split", "aux_size", "seed", "reconstruction_size")


def attack_settings_digest(params: Params, kind: str) -> str:
    """SHA-256 of :data:`_IN_CONTROL` of the ``attack`` block, the top-level ``seed`` and the
    gallery's levels of its ``kind`` (``strength``: image sources, ``snr_db``: embeddings only) as
    a default and a set (the sweep's order and the other kind's levels change no number). The
    gallery records it; a head's attack run at other settings is refused, since its numbers
    would sit beside float numbers of another setup."""
    cfg = params.attack
    settings: dict[str, Any] = {k: v for k, v in to_dict(cfg).items() if k in _IN_CONTROL}
    default, sweep = (
        (cfg.strength, cfg.strength_sweep) if kind == "strength" else (cfg.snr_db, cfg.snr_db_sweep)
    )
    settings[kind] = {"default": float(default), "levels": sorted({float(default), *sweep})}
    text = json.dumps({"attack": settings, "seed": params.seed}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_float_control(
    float_numbers: dict[str, Any],
    gallery_meta: dict[str, str],
    emb: EmbeddingsFile,
    *,
    dataset: str,
    embeddings: Path,
    float_metrics: Path,
    gallery: Path,
    withheld: int | None,
    settings: str,
) -> None:
    """The float control's numbers and linkage gallery must come from ``emb``: otherwise every
    ``_float`` number is another data set's and linkage matches victims against other records.
    And from the same ``attack.withhold_label`` (recorded in the gallery, written together with
    the numbers): otherwise the attribute attack's ``_float`` numbers predict another finding.
    And at the same attack settings (``settings``: :func:`attack_settings_digest`): otherwise
    each attack beside its ``_float`` number compares two strengths, aux sets or seeds."""
    for recorded, path in (
        (float_numbers.get("embeddings_fingerprint"), float_metrics),
        (gallery_meta.get("fingerprint"), gallery),
    ):
        try:
            check_same_embeddings(recorded, emb, embeddings_path=embeddings, recorded_in=path)
        except ArtifactError as err:
            raise ArtifactError(f"{err} [the float control: attack-float@{dataset}]") from None
    recorded = gallery_meta.get("withheld_label")
    if recorded != _withheld_tag(withheld):
        then = "no record" if recorded is None else f"withheld_label={recorded}"
        raise ArtifactError(
            f"{gallery}: the float control ran with {then}, but this run withholds "
            f"{_withheld_tag(withheld)} (attack.withhold_label); re-run attack-float@{dataset} "
            "with the same attack.withhold_label (dvc repro)"
        )
    recorded = gallery_meta.get("attack_settings_sha256")
    if recorded != settings:
        then = (
            "records no attack settings (made by an older version)"
            if recorded is None
            else "ran with other attack settings (the gallery's levels: attack.strength or "
            "snr_db and the set of their sweep; aux_size, attack.seed or seed differ from this "
            "run's)"
        )
        raise ArtifactError(
            f"{gallery}: the float control {then}, so its _float numbers would not be comparable "
            "with this run's; re-run "
            f"attack-float@{dataset} with these params (dvc repro), or run this attack with the "
            "params the float control used"
        )


# --------------------------------------------------------------------------------------------
# released codes (release_rr / release_kanon outputs)
# --------------------------------------------------------------------------------------------

ATTACKER_SEED_OFFSET = 7919  # the attacker's flips are their own, never the release's seed


def load_release(
    release_dir: Path,
    head_dir: Path,
    head: Any,
    head_config: dict,
    bits: int,
    cfg: AttackConfig,
    *,
    emb: EmbeddingsFile | None,
) -> tuple[dict[str, MechanismRelease], dict[str, np.ndarray], dict[str, Any]]:
    """(the release as the attacker sees it for each split the mechanism touched, the published
    bool codes per victim split, its ``config.json``).

    The release directory must come from this head: its recorded head config equal to the head's
    ``config.json`` (the release block aside), every split the mechanism did not touch identical
    to the head's codes, and, for k-anonymity, each released split reproduced by snapping the
    head's codes onto it.

    The attacker's mechanism per released split: randomised response with the public ε_code and
    the attacker's own seed (the same for every split); the k-anonymous snap onto *that split's*
    published codes, the rule :func:`pipeline.release.release_codes` applied (it k-anonymises each
    split on its own), so snapping a split's true codes reproduces its release exactly."""
    from privacy.release import randomized_response, snap_to_k_anonymous

    config_path, codes_path = release_dir / "config.json", release_dir / "codes.safetensors"
    if not config_path.is_file() or not codes_path.is_file():
        raise ArtifactError(
            f"{release_dir}: no released codes (config.json + codes.safetensors); run the "
            "release_rr / release_kanon stage first (dvc repro)"
        )
    config = read_json(config_path)
    info = config.get("release")
    if not isinstance(info, dict) or info.get("mechanism") not in ("rr", "kanon"):
        raise ArtifactError(
            f"{release_dir}: config.json has no release block; pass a release stage's --out"
        )
    # a hand-edited or foreign block: a KeyError (or StopIteration for no split) further down
    need = "epsilon_code" if info["mechanism"] == "rr" else "k"
    splits_ok = (
        isinstance(info.get("splits"), list)
        and len(info["splits"]) > 0
        and set(info["splits"]) <= set(VICTIMS)
    )
    value = info.get(need)
    value_ok = (
        isinstance(value, int | float | str) and not isinstance(value, bool)
        if need == "epsilon_code"
        else isinstance(value, int) and not isinstance(value, bool)
    )
    if not splits_ok or not value_ok:
        raise ArtifactError(
            f"{release_dir}: config.json's release block needs 'splits' (a non-empty list of "
            f"{', '.join(VICTIMS)}) and '{need}' (got splits={info.get('splits')!r}, "
            f"{need}={value!r}); re-run the release stage (dvc repro)"
        )
    codes, n_bits, _ = load_codes(codes_path)
    if n_bits != bits or config.get("method") != head_config.get("method"):
        raise ArtifactError(
            f"{release_dir}: released {config.get('method')} codes of {n_bits} bits, but the head is "
            f"{head_config.get('method')} with --bits {bits}; pass the release made from this head"
        )
    # the release stage writes the head's config.json (its fingerprint made public,
    # pipeline.release.release_provenance) plus its release block: anything else differing
    # (seed, fit settings, DP budget, embeddings) means another head's release
    recorded = {key: value for key, value in config.items() if key != "release"}
    splits = tuple(info.get("splits") or ())
    expected, _ = release_provenance(head_config, {}, emb=emb, splits=splits, head_dir=head_dir)
    if recorded != expected:
        keys = sorted(k for k in {*recorded, *expected} if recorded.get(k) != expected.get(k))
        raise ArtifactError(
            f"{release_dir}: made from another head: its recorded head config differs from "
            f"{head_dir / 'config.json'} in {', '.join(keys)}; pass the release made from this "
            "head (re-run the release stage: dvc repro)"
        )
    head_codes, _, _ = load_head_codes(head_dir)
    published = {}
    for split in VICTIMS:
        if split not in codes:
            raise ArtifactError(f"{release_dir}: no released {split} codes; re-run the release")
        if split not in info["splits"] and not np.array_equal(codes[split], head_codes[split]):
            raise ArtifactError(
                f"{release_dir}: the unreleased {split} codes differ from the head's {head_dir}; "
                "the release was made from another head (re-run the release stage)"
            )
        published[split] = unpack_bits(codes[split], n_bits)
    seed = cfg.seed + ATTACKER_SEED_OFFSET
    name = info["mechanism"]
    if name == "rr":
        eps = float(info["epsilon_code"])

        def mechanism(b: np.ndarray) -> np.ndarray:
            return randomized_response(b, eps, seed=seed)

        rr = MechanismRelease(CodeRelease.from_head(head), mechanism, name=name)
        return dict.fromkeys(info["splits"], rr), published, config
    k = int(info["k"])
    for split in info["splits"]:  # the k-anonymous release is a function of the head's codes
        true = unpack_bits(head_codes[split], n_bits)
        if not np.array_equal(snap_to_k_anonymous(true, published[split], k), published[split]):
            raise ArtifactError(
                f"{release_dir}: its {split} codes are not this head's k={k} release (snapping "
                f"the codes of {head_dir} does not reproduce them); re-run the release stage"
            )

    def snap(held: np.ndarray) -> MechanismRelease:
        return MechanismRelease(
            CodeRelease.from_head(head), lambda b: snap_to_k_anonymous(b, held, k), name=name
        )

    return {s: snap(published[s]) for s in info["splits"]}, published, config


# --------------------------------------------------------------------------------------------
# running the attacks
# --------------------------------------------------------------------------------------------


def make_attacks(
    names: list[str],
    release: Release,
    params: Params,
    *,
    linkage_default: float,
    head: Any | None = None,
    head_config: dict | None = None,
) -> list[Attack]:
    from privacy.linkage import LinkageConfig
    from privacy.membership import MembershipConfig

    cfg = params.attack
    attacks = []
    for name in names:
        context: dict[str, Any] = {}
        config: Any = None
        if name == "linkage":
            config = LinkageConfig(strength=linkage_default)
        elif name == "membership":
            config = MembershipConfig(
                shadow_heads=cfg.shadow_heads, candidates=cfg.mi_candidates, score=cfg.mi_score
            )
            if head is not None and head_config is not None:
                context = shadow_context(head, head_config)
        attacks.append(registry.build(name, release, config, seed=cfg.seed, **context))
    return attacks


def shadow_context(head: Any, head_config: dict) -> dict[str, Any]:
    """How the target head was trained, so shadow heads are trained the same way."""
    from hashers import registry as methods
    from hashers.trainer import FitConfig

    fit_cfg = FitConfig(**{**head_config["fit"], "progress": False})
    name = head_config["method"]

    def make_head(seed: int) -> Any:
        return methods.build(name, head.spec, head.config, seed=seed)

    context = {"make_head": make_head, "fit_config": fit_cfg, "n_classes": head.spec.n_classes}
    if isinstance(head_config.get("dp"), dict):
        context["train_shadow"] = dp_shadow_trainer(head_config["dp"])
    return context


def dp_shadow_trainer(dp: dict[str, Any]) -> Any:
    """Shadow heads of a DP-SGD target trained with DP-SGD at the target's recorded guarantee:
    target ε, δ, clipping norm and accountant from its ``config.json`` (the schedule comes from its
    ``fit`` block, like every shadow's). A missing key is an error naming the head's config."""
    from privacy.dp import DPConfig, dp_fit

    keys = ("dp_target_epsilon", "dp_delta", "dp_max_grad_norm", "dp_accountant")
    missing = [k for k in keys if k not in dp]
    if missing:
        raise ArtifactError(
            f"DP head config.json: dp block lacks {', '.join(missing)}; re-run its train_dp stage"
        )
    cfg = DPConfig(
        epsilon=float(dp["dp_target_epsilon"]),
        delta=float(dp["dp_delta"]),
        max_grad_norm=float(dp["dp_max_grad_norm"]),
        accountant=str(dp["dp_accountant"]),
    )

    def train(head: Any, train: Any, val: Any, *, config: Any) -> Any:
        # the shadows are the attacker's: their DP randomness is seeded by the shadow's own fit
        # seed (reproducible), never by the target's (secret unless dp.seed was set)
        return dp_fit(
            head, train, val, config=config, dp=dataclasses.replace(cfg, seed=config.seed)
        )

    return train


def run_attacks(
    attacks: list[Attack], aux: Records, victims: dict[str, Records]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """Numbers (``<attack>/...``), linkage sweep rows and skip reasons. Every attack's inputs
    (``check_inputs``) and aux size are checked before any is trained."""
    skipped: dict[str, str] = {}
    todo = []
    for attack in attacks:
        reason = attack.skip_reason(aux, victims)
        if reason:
            log.info("%s skipped: %s", attack.name, reason)
            skipped[attack.name] = reason
            continue
        attack.check_inputs(aux, victims)
        need = attack.required_aux(aux)
        if len(aux) < need:
            attack.fit(aux)  # raises the PrivacyError naming how many records it needs
        todo.append(attack)
    numbers: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for attack in todo:
        log.info("attack %s on %d aux records", attack.name, len(aux))
        start = cpu_seconds()
        result = attack.fit(aux).run(victims)
        log.info("attack %s: %.1f s CPU", attack.name, cpu_seconds() - start)
        numbers.update({f"{attack.name}/{k}": v for k, v in result.items()})
        rows += getattr(attack, "sweep_rows", [])
    return numbers, rows, skipped


#: attacks whose numbers depend on the whole release (anonymity sets span every published code) or
#: on the head alone (membership, skipped on releases): never re-run per victim split
WHOLE_RELEASE = ("anonymity", "membership")


def attack_by_publication(
    attacks: list[Attack],
    attacks_release: Release,
    releases: dict[str, Release],
    params: Params,
    linkage_default: float,
    aux: Records,
    victims: dict[str, Records],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str], dict[str, list[Attack]]]:
    """Run the attacks on a release whose victim splits were published differently
    (``release.apply_to``): ``releases`` names, per victim split, the release the attacker models
    for it. A split the mechanism did not touch maps to the head's own release (the test queries
    under ``apply_to: database``), so the strongest attacker trains on clean aux codes for it (the
    plain ``attack`` stage's numbers); a released split maps to the mechanism as it acted on that
    split (the k-anonymous release snaps each split onto its own published codes). ``attacks``
    were made for ``attacks_release`` and serve the splits mapped to it. Anonymity runs once over
    the whole release, membership (skipped on releases) once. The last value names, per victim
    split, the attacks that ran on it (the reconstruction grid shows the test split's decoder)."""
    whole = [a for a in attacks if a.name in WHOLE_RELEASE]
    per_split = [a for a in attacks if a.name not in WHOLE_RELEASE]
    numbers, rows, skipped = run_attacks(whole, aux, victims)
    served: dict[str, list[Attack]] = {}
    groups: list[tuple[Release, dict[str, Records]]] = [(attacks_release, {})]
    for split, rec in victims.items():
        group = next((g for r, g in groups if r is releases[split]), None)
        if group is None:
            groups.append((releases[split], group := {}))
        group[split] = rec
    for rel, group in groups:
        if not group:
            continue
        todo = (
            per_split
            if rel is attacks_release
            else make_attacks(
                [a.name for a in per_split], rel, params, linkage_default=linkage_default
            )
        )
        more, more_rows, more_skipped = run_attacks(todo, aux, group)
        numbers.update(more)
        rows += more_rows
        skipped.update(more_skipped)
        served.update({split: [*whole, *todo] for split in group})
    return numbers, rows, skipped, served


def add_float_control(numbers: dict[str, Any], float_numbers: dict[str, Any]) -> dict[str, Any]:
    """Beside every number of the codes, the same attack's number on the float embeddings."""
    out = dict(numbers)
    for key, value in numbers.items():
        if key.endswith("_baseline") or not isinstance(value, (int, float)):
            continue
        if isinstance(float_numbers.get(key), (int, float)):
            out[f"{key}_float"] = float_numbers[key]
    return out


def save_reconstruction_grid(
    path: Path, attacks: list[Attack], victims: dict[str, Records]
) -> bool:
    """Originals over reconstructions of the first test victims (only on request; never MLflow).
    ``attacks`` are those that ran on the test split: its reconstruction's decoder draws them.
    Returns whether a grid was written (False: no reconstruction attack ran on the test split)."""
    from privacy.reconstruction import Reconstruction

    rec = next((a for a in attacks if isinstance(a, Reconstruction) and hasattr(a, "model")), None)
    if rec is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.artifacts import atomic_path

    true, pred = rec.examples(victims["test"], 8)
    fig, axes = plt.subplots(2, len(true), figsize=(1.2 * len(true), 2.6), squeeze=False)
    for j in range(len(true)):
        for i, img in enumerate((true[j], pred[j])):
            ax = axes[i][j]
            shown = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax.imshow(shown, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def run_attack(
    params: Params,
    *,
    dataset: str,
    embeddings: Path,
    gallery: Path,
    metrics: Path,
    sweep: Path,
    method_name: str | None = None,
    bits: int | None = None,
    head_dir: Path | None = None,
    float_metrics: Path | None = None,
    reconstructions: Path | None = None,
    release_dir: Path | None = None,
) -> dict[str, Any]:
    is_float = method_name is None
    if not is_float and (bits is None or head_dir is None or float_metrics is None):
        raise ParamsError("--method needs --bits, --head and --float-metrics")
    if is_float and release_dir is not None:
        raise ParamsError("--release needs --method, --bits and --head (the head it was made from)")
    cfg = params.attack
    grid = reconstructions if cfg.save_reconstructions else None  # written only on request
    check_writable(
        metrics, sweep, *((gallery,) if is_float else ()), *(() if grid is None else (grid,))
    )
    emb = load_embeddings(embeddings, dataset=dataset)
    _, withheld = withhold_label(emb, cfg.withhold_label)
    head = head_config = None
    float_numbers: dict[str, Any] = {}
    if not is_float:
        assert head_dir is not None and bits is not None and float_metrics is not None
        head, head_config = rebuild_head(head_dir)
        check_head(head_dir, head_config, emb, head, bits, embeddings_path=embeddings)
        check_withheld(head_config, emb, withheld, cfg.withhold_label, head_dir=head_dir)
        # the float control (its numbers and the linkage gallery) must come from these embeddings
        float_numbers = read_json(float_metrics)
        kind, gal, gallery_meta = load_gallery(gallery, dataset)
        check_float_control(
            float_numbers,
            gallery_meta,
            emb,
            dataset=dataset,
            embeddings=embeddings,
            float_metrics=float_metrics,
            gallery=gallery,
            withheld=withheld,
            settings=attack_settings_digest(params, kind),
        )
    published: dict[str, np.ndarray | None] = dict.fromkeys(VICTIMS)
    mech_release, release_config = None, {}
    split_releases: dict[str, MechanismRelease] = {}
    if release_dir is not None:
        assert head_dir is not None and bits is not None
        split_releases, codes, release_config = load_release(
            release_dir, head_dir, head, head_config, bits, cfg, emb=emb
        )
        mech_release = next(iter(split_releases.values()))
        published.update(codes)
    images = load_images(params, dataset, emb)
    names = select_attacks(cfg, images is not None)
    common, shape = (
        (None, None) if images is None else common_images(images, cfg.reconstruction_size)
    )
    aux, victims, _ = build_records(params, emb, common)
    if is_float:
        kind, gal = build_gallery(params, victims, images, emb.meta)
    else:
        for split, rec in victims.items():
            if split not in gal or any(g.shape != rec.x.shape for g in gal[split].values()):
                raise ArtifactError(
                    f"{gallery}: the gallery does not match the {split} embeddings; re-run attack-float@{dataset}"
                )
    default = cfg.strength if kind == "strength" else cfg.snr_db
    if any(default not in g for g in gal.values()):
        raise ArtifactError(
            f"{gallery}: no gallery at the default {kind} {default}; re-run attack-float@{dataset}"
        )
    victims = {
        s: dataclasses.replace(r, reacquired=gal[s], released=published[s])
        for s, r in victims.items()
    }
    release: Release
    if is_float:
        release, name = FloatRelease(), f"attack@{dataset}-float"
    elif mech_release is not None:
        name = tracking.head_run_name("attack", release_config, dataset, method_name, bits)
        release = mech_release
    else:
        release = CodeRelease.from_head(head)
        name = tracking.head_run_name("attack", head_config, dataset, method_name, bits)
    tags = {"dataset": dataset, "backbone": emb.backbone, "release": release.kind}
    if not is_float:
        tags.update(method=str(method_name), bits=str(bits))
        tags.update(tracking.defence_of(release_config or head_config)[2])
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        run.log_params({"attack": to_dict(cfg), "seed": params.seed})
        attacks = make_attacks(
            names, release, params, linkage_default=default, head=head, head_config=head_config
        )
        by_split = {s: split_releases.get(s) for s in victims}
        if mech_release is None or all(r is mech_release for r in by_split.values()):
            numbers, rows, skipped = run_attacks(attacks, aux, victims)
            served = dict.fromkeys(victims, attacks)
        else:
            head_release = CodeRelease.from_head(head)
            releases = {s: head_release if r is None else r for s, r in by_split.items()}
            numbers, rows, skipped, served = attack_by_publication(
                attacks, mech_release, releases, params, default, aux, victims
            )
        numbers["aux_size"] = float(len(aux))
        if shape is not None and "reconstruction" in names and "reconstruction" not in skipped:
            for key, value in zip(("height", "width", "channels"), shape, strict=True):
                numbers[f"reconstruction/image_{key}"] = float(value)
        if not is_float:
            numbers = add_float_control(numbers, float_numbers)
            numbers["bits"] = bits
        # the head stage refuses a float control made from other embeddings (check_float_control);
        # a DP head's or a release's numbers carry the public digest its config records
        numbers["embeddings_fingerprint"] = reported_fingerprint(
            emb, None if is_float else (release_config or head_config)
        )
        for row in rows:
            row["perturbation"] = kind
        sweep_rows = rows or [{"group": "none", "strength": default, "perturbation": kind}]
        out = {**numbers, "skipped": skipped} if skipped else numbers
        # every attack finished: now write, all files together or none
        with atomic_outputs():
            if is_float:
                meta = {"dataset": dataset, "backbone": emb.backbone, "seed": cfg.seed}
                meta |= {"fingerprint": emb.fingerprint, "withheld_label": _withheld_tag(withheld)}
                meta["attack_settings_sha256"] = attack_settings_digest(params, kind)
                save_gallery(gallery, kind, gal, meta)
            write_csv(sweep, sweep_rows)
            tracking.record_metrics(metrics, out, run)
            drawn = grid is not None and save_reconstruction_grid(grid, served["test"], victims)
        if drawn:
            log.warning("%s: reconstructed patient images written to %s", name, grid)
        elif grid is not None:  # asked for, but no decoder ran on test: say so, claim no file
            log.warning(
                "%s: attack.save_reconstructions is set but no reconstruction attack ran on the "
                "test victims (embeddings-only source, or not in attack.attacks); no grid "
                "written to %s",
                name,
                grid,
            )
    log.info("%s: %d numbers written to %s", name, len(numbers), metrics)
    return out


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Privacy attacks on a released head's codes, or on the float embeddings.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument(
        "--gallery", type=Path, required=True, help="linkage gallery (written by the float run)"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--sweep", type=Path, required=True, help="linkage sweep CSV (DVC plot)")
    parser.add_argument("--method", help="hashing method; omit for the float control")
    parser.add_argument("--bits", type=int)
    parser.add_argument("--head", type=Path, help="the train stage's output directory")
    parser.add_argument("--float-metrics", type=Path, help="the float control's metrics JSON")
    parser.add_argument(
        "--reconstructions",
        type=Path,
        help="PNG grid, written only with attack.save_reconstructions",
    )
    parser.add_argument(
        "--release",
        type=Path,
        help="a release_rr / release_kanon output dir: attack its published codes (needs --head)",
    )
    args = parser.parse_args(argv)
    run_attack(
        load(args),
        dataset=args.dataset,
        embeddings=args.embeddings,
        gallery=args.gallery,
        metrics=args.metrics,
        sweep=args.sweep,
        method_name=args.method,
        bits=args.bits,
        head_dir=args.head,
        float_metrics=args.float_metrics,
        reconstructions=args.reconstructions,
        release_dir=args.release,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
