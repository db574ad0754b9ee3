"""The attack grid measured, not extrapolated: every method x 4 bit lengths on the real BreastMNIST.

Issue 9 asks for the attack grid of 13 methods x 4 bit lengths on BreastMNIST in under 15 min on the
2-core CPU. This runs the pipeline's own stages in-process on the shared official file: extract
with a randomly initialised 1-layer DINOv2 of width ``--dim`` (768, ViT-B's embedding size, saved
with ``save_pretrained`` and loaded as a local backbone dir: no hub offline; attack cost depends on
the embedding dimension and the record counts, not on the weights),
the float control ``attack@breastmnist-float`` once (it builds the re-acquired linkage gallery: a
one-off backbone cost per dataset, reported apart), then for every (method, bits) ``train`` (not
part of the grid's time) and ``attack@breastmnist-<method>-<bits>`` with the ``attack:`` defaults
of params.yaml (all six attacks, 16 shadow heads). Wall and process CPU time per run; with other
jobs on the machine the wall time is inflated, the CPU time is not (the attack models run on one
torch thread, see privacy/_learn.py)::

    python bench/bench_attack_grid.py --out bench/RESULTS-attack-grid.md
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import attack, extract, train  # noqa: E402
from pipeline.common import cpu_seconds  # noqa: E402
from pipeline.common import stage_argv as cli  # noqa: E402

METHODS = ("dsh", "cnnh", "dpsh", "dhn", "hashnet", "dsdh", "dnnh", "dshgan", "tcl", "saeh",
           "lsh", "itq", "pca")  # fmt: skip


class AttackTimes(logging.Handler):
    """Collects the attack stage's per-attack CPU seconds (its ``attack <name>: <s> s CPU`` lines)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        words = record.getMessage().split()
        if len(words) == 5 and words[0] == "attack" and words[3:] == ["s", "CPU"]:
            name = words[1].rstrip(":")
            self.seconds[name] = self.seconds.get(name, 0.0) + float(words[2])


def random_backbone(path: Path, *, dim: int, image_size: int) -> Path:
    """A seeded random 1-layer ``Dinov2Model`` of width ``dim`` saved as a local backbone dir."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=dim, num_hidden_layers=1, num_attention_heads=max(1, dim // 64),
        mlp_ratio=2, patch_size=14, image_size=image_size,
    )  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(path)
    return path


def timed(fn, argv: list[str], *, may_refuse: bool = False) -> tuple[float, float] | None:
    """Wall and CPU seconds of one stage run; None when a stage refused its params (exit 2) and
    ``may_refuse`` (a cell the method cannot have, e.g. ITQ bits > embedding dimension)."""
    w, c = time.perf_counter(), cpu_seconds()
    rc = fn(argv)
    if rc == 2 and may_refuse:
        return None
    if rc != 0:
        raise SystemExit(f"stage failed: {' '.join(argv)}")
    return time.perf_counter() - w, cpu_seconds() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--bits", nargs="+", type=int, default=[12, 24, 36, 48])
    ap.add_argument("--dim", type=int, default=768, help="embedding width of the random backbone")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_attack = AttackTimes()
    logging.getLogger("pipeline.attack").addHandler(per_attack)
    logging.getLogger("pipeline.attack").setLevel(logging.INFO)
    rows, load0 = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        vit = random_backbone(tmp / "vit", dim=args.dim, image_size=112)
        base = ["--params", str(REPO / "params.yaml")]
        for item in (f"data.root={args.root}", "data.download=false", "data.datasets=[breastmnist]",
                     f"backbone.name={vit}", "backbone.image_size=112", "tracking.enabled=false"):  # fmt: skip
            base += ["--set", item]
        for item in args.overrides:
            base += ["--set", item]
        emb, gallery, fl = tmp / "emb.safetensors", tmp / "gallery.safetensors", tmp / "float.json"
        extract.main(
            cli(*base, "--no-progress", dataset="breastmnist", out=emb, metrics=tmp / "x.json")
        )
        common = {"dataset": "breastmnist", "embeddings": emb, "gallery": gallery}
        fw, fc = timed(attack.main, cli(*base, **common, metrics=fl, sweep=tmp / "f.csv"))
        skipped: list[str] = []
        per_attack.seconds.clear()  # the grid's share per attack, float control aside
        print(
            f"float control (gallery re-embedding included): {fw:.1f} s wall, {fc:.1f} s CPU",
            flush=True,
        )
        for m in args.methods:
            for b in args.bits:
                head = tmp / f"{m}-{b}"
                files = {"out": head, "metrics": tmp / f"t-{m}-{b}.json", "history": tmp / "h.csv"}
                trained = timed(
                    train.main,
                    cli(*base, dataset="breastmnist", method=m, bits=b, embeddings=emb, **files),
                    may_refuse=True,
                )
                if trained is None:  # the stage logged why (its one-line error)
                    skipped.append(f"{m}-{b}")
                    continue
                tw = trained[0]
                aw, ac = timed(attack.main, cli(
                    *base, **common, method=m, bits=b, head=head, float_metrics=fl,
                    metrics=tmp / f"a-{m}-{b}.json", sweep=tmp / f"a-{m}-{b}.csv",
                ))  # fmt: skip
                rows.append((m, b, tw, aw, ac))
                print(
                    f"{m}-{b}: train {tw:.1f} s, attacks {aw:.1f} s wall / {ac:.1f} s CPU",
                    flush=True,
                )
    wall, cpu = sum(r[3] for r in rows), sum(r[4] for r in rows)
    shown = []  # the command as a reader reruns it: no temporary output path
    for a in sys.argv[1:]:
        shown = shown[:-1] if shown and shown[-1] == "--out" else [*shown, a]
    lines = [
        f"## Attack grid: {len(args.methods)} methods x {len(args.bits)} bit lengths on BreastMNIST, "
        f"{args.dim}-d embeddings",
        "",
        f"Command: `python bench/bench_attack_grid.py {' '.join(shlex.quote(a) for a in shown)}` "
        f"(1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; 2 cores).",
        "",
        "| method | bits | train s (wall) | attacks s (wall) | attacks s (CPU) |",
        "|---|---:|---:|---:|---:|",
        *(f"| {m} | {b} | {tw:.1f} | {aw:.1f} | {ac:.1f} |" for m, b, tw, aw, ac in rows),
        "",
        f"Grid of {len(rows)} attack runs: **{wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU** "
        f"(float control, once per dataset: {fw:.1f} s wall, {fc:.1f} s CPU; head training not counted).",
        *(
            [
                "",
                f"Not in the grid (the train stage refused the params): {', '.join(skipped)}.",
            ]
            if skipped
            else []
        ),
        "",
        "CPU seconds per attack over the grid: "
        + ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(per_attack.seconds.items(), key=lambda kv: -kv[1])
        )
        + ".",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        prev = args.out.read_text() if args.out.exists() else "# Attack grid benchmark\n\n"
        args.out.write_text(prev + text + "\n")


if __name__ == "__main__":
    main()
