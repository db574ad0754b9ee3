"""Stage ``release``: turn a head's codes into released codes (:mod:`privacy.release`).

``--mechanism rr``: ε-LDP randomised response on every bit (``--epsilon-code``). The flips come
from OS entropy unless ``release.seed`` is an integer (then reproducible, derived per release from
the seed and what is released, :func:`privacy.release.release_stream`); the config.json records
``"randomness": "secret"`` (no seed anywhere) or ``"seeded"`` with the seed, under which the ε_code
guarantee holds only against someone without it.
``--mechanism kanon``: k-anonymous release (``release.k``). ``release.apply_to`` picks the split(s)
released: ``database`` (train codes), ``query`` (test codes) or ``both``; the other splits are
copied unchanged (val stays the attacker's auxiliary data). The output directory holds
``codes.safetensors`` and the head's ``config.json`` extended by a ``release`` block, i.e. the files
``evaluate`` (and ``attack``) read from a head directory, so they run on released codes unchanged,
except that the embeddings fingerprint the head records becomes a public one that leaves out the
released splits' content (:func:`release_provenance`; ``--embeddings`` is the head's file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.artifacts import (
    EmbeddingsFile,
    atomic_outputs,
    check_head_embeddings,
    check_same_embeddings,
    check_writable,
    load_embeddings,
    load_head_codes,
    private_splits,
    public_fingerprint,
    read_json,
    recorded_fingerprint,
    save_codes,
    write_json,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params, ParamsError
from privacy.errors import PrivacyError
from privacy.release import k_anonymize, keep_probability, randomized_response, release_stream
from retrieval.codes import pack_bits, unpack_bits

log = logging.getLogger(__name__)

MECHANISMS = ("rr", "kanon")
SPLITS_OF = {"database": ("train",), "query": ("test",), "both": ("train", "test")}


def release_codes(
    codes: dict[str, Any],
    n_bits: int,
    *,
    mechanism: str,
    splits: tuple[str, ...],
    epsilon_code: float | None,
    k: int,
    seed: int | None,
    context: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Released packed codes per split and the release's aggregate figures.

    Randomised response: ``seed=None`` draws every split's flips from fresh OS entropy; an integer
    seed derives each split's stream from (seed, ``context``, bits, split, mechanism, ε_code)
    (:func:`privacy.release.release_stream`), so no two splits, heads or releases share a mask.
    """
    out = dict(codes)
    figures: dict[str, float] = {}
    for split in splits:
        bits = unpack_bits(codes[split], n_bits)
        if mechanism == "rr":
            assert epsilon_code is not None
            stream = release_stream(
                seed,
                {
                    **(context or {}),
                    "bits": n_bits,
                    "split": split,
                    "mechanism": mechanism,
                    "epsilon_code": epsilon_json(epsilon_code),
                },
            )
            released = randomized_response(bits, epsilon_code, seed=stream)
            figures[f"{split}/share_bits_flipped"] = float((released != bits).mean())
        else:
            result = k_anonymize(bits, k)
            released = result.codes
            figures.update({f"{split}/{key}": v for key, v in result.summary().items()})
        out[split] = pack_bits(released)
    if mechanism == "rr":
        assert epsilon_code is not None
        if math.isfinite(epsilon_code):  # ε = ∞ (no noise) has no JSON number
            figures["epsilon_code"] = epsilon_code
        figures["keep_probability"] = keep_probability(epsilon_code, n_bits)
    return out, figures


def release_context(head_config: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the released head in a seeded release's stream (with bits, split,
    mechanism and ε_code, added per split): its whole ``config.json`` (dataset, method and its
    settings, training settings and seed, DP block, embeddings fingerprint), so heads that differ
    in any of these get other flip masks under the same ``release.seed``."""
    dp = head_config.get("dp")
    return {
        "dataset": head_config.get("dataset"),
        "method": head_config.get("method"),
        "head_seed": head_config.get("seed"),
        "head_dp_target_epsilon": dp.get("dp_target_epsilon") if isinstance(dp, dict) else None,
        "head_config_sha256": hashlib.sha256(
            json.dumps(head_config, sort_keys=True, default=str).encode("utf-8")
        ).hexdigest(),
    }


def release_provenance(
    head_config: Mapping[str, Any],
    codes_meta: Mapping[str, str],
    *,
    emb: EmbeddingsFile | None,
    splits: tuple[str, ...],
    head_dir: Path,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The head ``config.json`` and codes metadata a release publishes: the head's, with its
    embeddings fingerprint replaced by :func:`pipeline.artifacts.public_fingerprint` over every
    split but the released ones (and those the head's own record already leaves out, train for a
    DP head).

    The full content fingerprint is a SHA-256 of every record, the released ones included: an
    adversary who knows all records but one recomputes it for each candidate and learns the
    target's record outright, whatever ε_code (or k) protects its code. A head that records no
    fingerprint is published as it is. ``emb``: the embeddings file the head was trained on,
    needed when the head records a fingerprint."""
    recorded = recorded_fingerprint(head_config)
    if recorded is None and "fingerprint" not in codes_meta:
        return dict(head_config), dict(codes_meta)
    if emb is None:
        raise ParamsError(
            f"--embeddings: {head_dir} records a fingerprint of its embeddings; pass the "
            "embeddings file it was trained on, so the release records a public fingerprint "
            "that leaves out the released splits"
        )
    already = (private_splits(recorded) or ()) if recorded else ()  # train, for a DP head
    hidden = {*splits, *already}
    digest = public_fingerprint(emb.x, emb.y, private=hidden)
    config = dict(head_config)
    block = {k: v for k, v in (config.get("embeddings") or {}).items() if k != "fingerprint"}
    config["embeddings"] = {**block, "public_fingerprint": digest}
    return config, {**codes_meta, "fingerprint": digest}


def epsilon_json(epsilon_code: float | None) -> float | str | None:
    """ε_code as JSON holds it: ``"inf"`` for ∞ (JSON has no infinity; ``float("inf")`` reads it)."""
    if epsilon_code is not None and math.isinf(epsilon_code):
        return "inf"
    return epsilon_code


def run_release(
    params: Params,
    *,
    head_dir: Path,
    mechanism: str,
    epsilon_code: float | None,
    out: Path,
    metrics: Path,
    embeddings: Path | None = None,
) -> dict[str, Any]:
    if mechanism not in MECHANISMS:
        raise ParamsError(f"--mechanism {mechanism!r}: use one of {', '.join(MECHANISMS)}")
    if mechanism == "rr" and epsilon_code is None:
        raise ParamsError("--mechanism rr needs --epsilon-code (e.g. 1, 4, 16, 64)")
    if mechanism == "kanon" and epsilon_code is not None:
        # it was recorded as the k-anonymous release's "epsilon_code": a budget it does not have
        raise ParamsError(
            f"--epsilon-code {epsilon_code:g}: a k-anonymous release has no ε_code (it is not DP; "
            "its config.json would record one); drop --epsilon-code (release.k sets its k), or "
            "use --mechanism rr"
        )
    if epsilon_code is not None and (math.isnan(epsilon_code) or not epsilon_code > 0):
        raise PrivacyError(f"--epsilon-code {epsilon_code}: the code budget must be > 0")
    r = params.release
    check_writable(metrics, out / "codes.safetensors", out / "config.json", dirs=[out])
    config = read_json(head_dir / "config.json")
    earlier = config.get("release")
    if earlier is not None:
        # its release block would be replaced by this one: the first mechanism (its flips, its
        # splits) recorded nowhere, and its released splits recorded as the head's own codes
        prior = earlier if isinstance(earlier, dict) else {}
        made_from = f" ({prior['source']})" if prior.get("source") else ""
        raise ParamsError(
            f"--head {head_dir}: a release (its config.json has a release block, mechanism "
            f"{prior.get('mechanism')}), not a head; pass the head folder it was made from"
            f"{made_from}: a release of a release would record only the second mechanism"
        )
    splits = SPLITS_OF[r.apply_to]
    codes, n_bits, meta = load_head_codes(head_dir, require=("train", "test", *splits))
    emb = None if embeddings is None else load_embeddings(embeddings)
    if emb is not None:  # the head's own provenance first: a release of other rows is refused
        check_head_embeddings(config, emb, head_dir=head_dir, embeddings_path=embeddings)
        check_same_embeddings(
            meta.get("fingerprint"),
            emb,
            embeddings_path=embeddings,
            recorded_in=head_dir / "codes.safetensors",
        )
    public_config, public_meta = release_provenance(
        config, meta, emb=emb, splits=splits, head_dir=head_dir
    )
    for split in splits:
        if mechanism == "kanon" and r.k > len(codes[split]):
            raise PrivacyError(
                f"release.k={r.k} is larger than the {len(codes[split])} released {split} codes; "
                "lower release.k"
            )
    block = {"mechanism": mechanism, "epsilon_code": epsilon_code, "k": r.k}
    dataset, method = str(config.get("dataset")), str(config.get("method"))
    name = tracking.head_run_name("release", {"release": block}, dataset, method, n_bits)
    tags = {"dataset": dataset, "method": method, "bits": n_bits, "mechanism": mechanism}
    tags.update(tracking.defence_of({"release": block})[2])
    # randomness: "secret" (OS entropy, recorded nowhere) or "seeded" (the seed is recorded, and
    # whoever holds it can undo the flips); the k-anonymous release draws nothing
    randomness = "none" if mechanism == "kanon" else "secret" if r.seed is None else "seeded"
    seed_record = {"seed": r.seed} if randomness == "seeded" else {}
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        run.log_params(
            {
                "release.apply_to": r.apply_to,
                "release.k": r.k,
                "release.randomness": randomness,
                **{f"release.{k}": v for k, v in seed_record.items()},
            }
        )
        released, figures = release_codes(
            codes,
            n_bits,
            mechanism=mechanism,
            splits=splits,
            epsilon_code=epsilon_code,
            k=r.k,
            seed=r.seed,
            context=release_context(config),
        )
        info = {
            "mechanism": mechanism,
            "apply_to": r.apply_to,
            "splits": list(splits),
            "epsilon_code": epsilon_json(epsilon_code),
            "k": r.k if mechanism == "kanon" else None,
            "randomness": randomness,
            **seed_record,
            "source": str(head_dir),
        }
        with atomic_outputs():  # the released codes, their config and metrics land together
            save_codes(out / "codes.safetensors", released, n_bits=n_bits, meta=public_meta)
            write_json(out / "config.json", {**public_config, "release": info})
            # the digest the release's config.json records, for the report to match
            digest = recorded_fingerprint(public_config)
            recorded = {} if digest is None else {"embeddings_fingerprint": digest}
            tracking.record_metrics(metrics, {**figures, **recorded}, run)
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    return figures


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Release a head's codes with randomised response or k-anonymity.")
    parser.add_argument("--head", type=Path, required=True, help="a train/train_dp output dir")
    parser.add_argument("--mechanism", required=True, choices=MECHANISMS)
    parser.add_argument("--epsilon-code", type=float, default=None)
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="the embeddings file the head was trained on (needed when the head records its "
        "fingerprint: the release records a public one instead)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    run_release(
        load(args),
        head_dir=args.head,
        mechanism=args.mechanism,
        epsilon_code=args.epsilon_code,
        out=args.out,
        metrics=args.metrics,
        embeddings=args.embeddings,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
