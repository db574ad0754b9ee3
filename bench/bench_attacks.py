"""Attack benchmark: wall time of the privacy attacks for one (method, bits) on synthetic data.

Questions it answers (issue 9): on PneumoniaMNIST-sized data (4708 train, 524 val, 624 test, 768-d,
28x28 images) do attacks 1-5 (linkage, anonymity, inversion, reconstruction, attribute) for one
(method, bits) finish in under 60 s on the 2-core CPU; does membership inference with 16 shadow
heads finish in under 5 min; and, from the measured per-run time on BreastMNIST-sized data (546 /
78 / 156), does the attack grid of 13 methods x 4 bit lengths fit in 15 min?

    python bench/bench_attacks.py --size pneumonia --method dpsh --bits 48 --shadow-heads 16 \\
        --out bench/RESULTS-attacks.md
    python bench/bench_attacks.py --size breast --method dpsh --bits 48 --shadow-heads 16 \\
        --grid-estimate 52 --append --out bench/RESULTS-attacks.md

Synthetic data: Gaussian class clusters (a 32-d latent class structure mapped into 768-d, a shared
offset, isotropic noise) and 28x28 images that are a fixed linear function of the embeddings, so the
learned attacks have something to learn. The head is trained with the ``train:`` defaults of
``params.yaml`` (its training time is reported but is not part of the attack time). The linkage
gallery uses embedding noise at the default SNR (re-embedding perturbed images is a backbone cost paid
once per dataset by ``attack-float@<ds>``, not per head). Timings depend on shapes and epoch counts,
not on the values.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {"pneumonia": (4708, 524, 624, 2), "breast": (546, 78, 156, 2)}


def synthetic(n: tuple[int, int, int], n_classes: int, dim: int = 768, seed: int = 0):
    from privacy.base import Records

    g = np.random.default_rng(seed)
    basis = g.normal(size=(32, dim)) / np.sqrt(32)
    centers = g.normal(size=(n_classes, 32)) * 1.5
    offset = g.normal(size=dim) * 2.0
    pix = g.normal(size=(dim, 784)) / np.sqrt(dim)
    out = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        y = g.integers(0, n_classes, count)
        latent = centers[y] + g.normal(size=(count, 32))
        x = (latent @ basis + offset + 0.5 * g.normal(size=(count, dim))).astype(np.float32)
        img = np.clip(128 + 40 * ((x - offset) @ pix), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        out[split] = Records(
            split=split, index=np.arange(count), x=x, y=y.astype(np.int64),
            y_multihot=np.eye(n_classes, dtype=np.float32)[y], images=img,
        )  # fmt: skip
    return out


RELEASED = {
    "linkage": "train/top1",
    "inversion": "train/cosine_centered",
    "attribute": "train/balanced_accuracy",
}


def released_table(epsilons, release, recs, victims, snr) -> list[str]:
    """Linkage, inversion and attribute inference on the database (train) codes randomised at each
    ε_code — the attack_rr stage's setting (the attacker randomises their aux codes with the public
    mechanism and their own seed); ε = ∞ is the head's own codes."""
    from privacy import registry
    from privacy.base import MechanismRelease
    from privacy.linkage import LinkageConfig
    from privacy.release import randomized_response

    lines = [
        "Attacks on the database codes randomised at ε_code (`release.apply_to: database`):",
        "",
        "| ε_code | " + " | ".join(f"{a} {k}" for a, k in RELEASED.items()) + " | wall s |",
        "|---:|" + "---:|" * (len(RELEASED) + 1),
    ]
    clean = release.encode(recs["train"].x)
    for eps in [*sorted(epsilons), float("inf")]:
        t = time.perf_counter()
        mech = MechanismRelease(
            release, lambda b, e=eps: randomized_response(b, e, seed=7919), name="rr"
        )
        published = randomized_response(clean, eps, seed=0)
        vic = {**victims, "train": dataclasses.replace(victims["train"], released=published)}
        cells = []
        for name, key in RELEASED.items():
            conf = LinkageConfig(strength=snr) if name == "linkage" else None
            out = registry.build(name, mech, conf, seed=0).fit(recs["val"]).run(vic)
            cells.append(f"{out[key]:.3f} ({out[key + '_baseline']:.3f})")
        secs = time.perf_counter() - t
        lines.append(f"| {eps:g} | " + " | ".join(cells) + f" | {secs:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", "(code-blind baseline in brackets)"]
    return lines


def main(argv: list[str] | None = None) -> int:
    from hashers import registry as methods
    from hashers.base import EmbeddingSet, HeadSpec
    from hashers.trainer import fit
    from pipeline.common import cpu_seconds  # with the forked shadow trainers' CPU (children)
    from pipeline.config import load_params
    from pipeline.train import fit_config
    from privacy import registry
    from privacy.base import CodeRelease
    from privacy.linkage import LinkageConfig
    from privacy.membership import MembershipConfig
    from privacy.perturb import noisy_embeddings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="pneumonia")
    ap.add_argument("--method", default="dpsh")
    ap.add_argument("--bits", type=int, default=48)
    ap.add_argument("--shadow-heads", type=int, default=16)
    ap.add_argument("--skip-membership", action="store_true")
    ap.add_argument(
        "--mi-score",
        default="relaxed_margin",
        help="membership score: relaxed_margin | code_stability | code_margin (attack.mi_score)",
    )
    ap.add_argument(
        "--grid-estimate", type=int, default=0, help="runs in the grid to extrapolate to"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: see privacy/_learn.py)"
    )
    ap.add_argument(
        "--release-epsilons",
        type=lambda s: [float(e) for e in s.split(",")],
        default=[],
        help="also attack the database codes randomised at these ε_code (e.g. 1,4,16,64)",
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    n_tr, n_va, n_te, n_classes = SIZES[args.size]
    recs = synthetic((n_tr, n_va, n_te), n_classes)
    snr = params.attack.snr_db
    victims = {
        s: dataclasses.replace(recs[s], reacquired={snr: noisy_embeddings(recs[s].x, snr, seed=1)})
        for s in ("train", "test")
    }
    spec = HeadSpec(in_dim=768, n_bits=args.bits, n_classes=n_classes,
                    hidden_dims=params.train.hidden_dims, dropout=params.train.dropout)  # fmt: skip
    cfg = fit_config(params, progress=False)
    mcfg = params.method_config(args.method)
    head = methods.build(args.method, spec, mcfg, seed=0)
    t0 = time.perf_counter()
    tr = recs["train"]
    fit(head, EmbeddingSet.from_numpy(tr.x, tr.y_multihot),
        EmbeddingSet.from_numpy(recs["val"].x, recs["val"].y_multihot), config=cfg)  # fmt: skip
    train_s = time.perf_counter() - t0
    release = CodeRelease.from_head(head)

    rows = []
    cpu: dict[str, float] = {}
    for name in ("linkage", "anonymity", "inversion", "reconstruction", "attribute"):
        conf = LinkageConfig(strength=snr) if name == "linkage" else None
        t, c = time.perf_counter(), cpu_seconds()
        out = registry.build(name, release, conf, seed=0).fit(recs["val"]).run(victims)
        rows.append((name, time.perf_counter() - t, out))
        cpu[name] = cpu_seconds() - c
        print(f"{name}: {rows[-1][1]:.1f}s", flush=True)
    if not args.skip_membership:
        make = lambda s: methods.build(args.method, spec, mcfg, seed=s)  # noqa: E731
        mi = registry.build(
            "membership", release,
            MembershipConfig(shadow_heads=args.shadow_heads, score=args.mi_score), seed=0,
            make_head=make, fit_config=cfg, n_classes=n_classes,
        )  # fmt: skip
        t, c = time.perf_counter(), cpu_seconds()
        out = mi.fit(recs["val"]).run(victims)
        cpu["membership"] = cpu_seconds() - c
        rows.append(("membership", time.perf_counter() - t, out))
        print(f"membership: {rows[-1][1]:.1f}s", flush=True)

    one_to_five = sum(s for n, s, _ in rows if n != "membership")
    total = sum(s for _, s, _ in rows)
    cmd = "python bench/bench_attacks.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    lines = [
        f"## {args.size}-sized synthetic ({n_tr}/{n_va}/{n_te}, 768-d, 28x28), "
        f"{args.method}-{args.bits}"
        + ("" if args.mi_score == "relaxed_margin" else f", membership score {args.mi_score}"),
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, shared with other jobs (timings noisy). Head training "
        f"(not part of the attacks): {train_s:.1f} s.",
        "",
        "| attack | wall s | CPU s | headline (test) |",
        "|---|---:|---:|---|",
    ]
    keys = {
        "linkage": "test/top1", "anonymity": "test/r0/share_unique", "inversion": "test/cosine",
        "reconstruction": "test/psnr", "attribute": "test/accuracy", "membership": "auc",
    }  # fmt: skip
    for name, secs, out in rows:
        k = keys[name]
        base = out.get(f"{k}_baseline")
        shown = f"{k} {out[k]:.3f}" + (f" (baseline {base:.3f})" if base is not None else "")
        lines.append(f"| {name} | {secs:.1f} | {cpu[name]:.1f} | {shown} |")
    cpu15 = sum(v for k, v in cpu.items() if k != "membership")
    lines += [
        "",
        f"Attacks 1-5: **{one_to_five:.1f} s** wall ({cpu15:.1f} s CPU); all: **{total:.1f} s** wall "
        f"({sum(cpu.values()):.1f} s CPU). With one torch thread, CPU time is what the wall time "
        "would be on an unloaded core.",
    ]
    if args.grid_estimate:
        lines.append(
            f"Grid estimate: {args.grid_estimate} runs x {total:.1f} s = "
            f"**{args.grid_estimate * total / 60:.1f} min** (extrapolated from this one run; "
            "closed-form methods train shadow heads faster, pairwise/triplet methods slower)."
        )
    if args.release_epsilons:
        lines += ["", *released_table(args.release_epsilons, release, recs, victims, snr)]
    text = "\n".join(lines) + "\n\n"
    print(text)
    if args.out:
        prev = (
            args.out.read_text() if args.append and args.out.exists() else "# Attack benchmark\n\n"
        )
        args.out.write_text(prev + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
