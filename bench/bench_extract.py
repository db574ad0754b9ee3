"""Benchmark of the extract stage: is the backbone forward pass the bottleneck?

On the same images and batches it measures

(a) the raw backbone forward (``Backbone.embed``) on pixel tensors built beforehand, on the device;
(b) the full extraction path (``pipeline.extract.embed_images``: uint8 MedMNIST arrays -> preprocess
    on the device -> forward -> float32 numpy),

for fp32 and bf16, and prints a markdown table with the ratio (b)/(a) (target: >= 0.9, i.e.
preprocessing and data movement cost at most ~10% of the forward pass), and (c) the rate of the
preprocessing alone (so 1/(b) ~ 1/(a) + 1/(c)).

Real DINOv2 weights are not needed for throughput: ``--arch base`` builds a randomly initialised
``Dinov2Model`` with ViT-B/14 dimensions (hidden 768, 12 layers, 12 heads, patch 14, 224 px).

    python bench/bench_extract.py --backbone tiny-random --n 64 --batch-size 32
    python bench/bench_extract.py --arch base --n 32 --batch-size 16
    python bench/bench_extract.py --backbone facebook/dinov2-base --n 256 --batch-size 64   # cached weights
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.backbones import Backbone, load_backbone, resolve_device  # noqa: E402
from pipeline.config import BackboneConfig  # noqa: E402
from pipeline.data import ImageSplit  # noqa: E402
from pipeline.extract import embed_images  # noqa: E402

DEFAULT_NPZ = REPO.parent / "shared" / "data" / "medmnist" / "retinamnist.npz"


PRECISIONS = ("fp32", "bf16")  # what Backbone.embed runs: any other label ran fp32


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def precision_list(text: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in PRECISIONS]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a comma-separated list of {', '.join(PRECISIONS)} "
            f"({', '.join(map(repr, bad)) or 'none'} is not one; another label would time fp32)"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--backbone", default="tiny-random", help="tiny-random, a HF id or a local model dir"
    )
    p.add_argument(
        "--arch",
        choices=["base"],
        default=None,
        help="random-weight ViT-B/14 (overrides --backbone)",
    )
    p.add_argument("--n", type=positive_int, default=64, help="images per measurement")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="default: 224 (56 for tiny-random)")
    p.add_argument("--resize", choices=["resize", "pad"], default="resize")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    p.add_argument(
        "--precisions", type=precision_list, default="fp32,bf16", help="comma-separated: fp32,bf16"
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=2,
        help="timed repeats per measurement (best is kept)",
    )
    p.add_argument(
        "--npz", type=Path, default=DEFAULT_NPZ, help="MedMNIST .npz giving the uint8 images"
    )
    return p.parse_args(argv)


def load_images(path: Path, n: int) -> tuple[np.ndarray, str]:
    """``n`` uint8 training images of a MedMNIST file (tiled if it has fewer), or random ones."""
    if path.is_file():
        with np.load(path) as z:
            images = z["train_images"]
        reps = -(-n // len(images))
        return np.concatenate([images] * reps)[:n], f"{path.name} {images.shape[1:]}"
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    return images, "random uint8 (28, 28, 3) (MedMNIST file not found)"


def vit_b14(image_size: int, device: torch.device, *, resize: str) -> Backbone:
    """A randomly initialised DINOv2 ViT-B/14 (weights do not matter for throughput)."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=14,
        image_size=image_size,
    )
    torch.manual_seed(0)
    model = Dinov2Model(config).eval().requires_grad_(False).to(device)
    return Backbone(
        model=model, name="random ViT-B/14", revision="random", image_size=image_size, resize=resize,
        pooling="cls", device=device, dtype="fp32", hidden_size=768, patch_size=14,
    )  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(backbone: Backbone, pixels: list[torch.Tensor]) -> float:
    """(a) images/s of ``Backbone.embed`` alone on pixel tensors already on the device."""
    t0 = time.perf_counter()
    for p in pixels:
        backbone.embed(p)
    sync(backbone.device)
    return sum(len(p) for p in pixels) / (time.perf_counter() - t0)


def time_full(backbone: Backbone, split: ImageSplit, *, batch_size: int) -> float:
    """(b) images/s of the extraction path: uint8 arrays -> preprocess -> forward -> numpy."""
    t0 = time.perf_counter()
    embed_images(backbone, split, batch_size=batch_size, progress=False)
    return len(split) / (time.perf_counter() - t0)


def time_preprocess(backbone: Backbone, images: np.ndarray, *, batch_size: int) -> float:
    """(c) images/s of the preprocessing alone (uint8 -> normalised pixels on the device)."""
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        backbone.preprocess(images[i : i + batch_size])
    sync(backbone.device)
    return len(images) / (time.perf_counter() - t0)


def measure(
    backbone: Backbone,
    pixels: list[torch.Tensor],
    split: ImageSplit,
    *,
    batch_size: int,
    repeats: int,
) -> tuple[float, float, float]:
    """Best (a), (b), (c) rates over ``repeats`` interleaved rounds, after one warm-up batch each."""
    backbone.embed(pixels[0])
    embed_images(
        backbone,
        split.subset(np.arange(min(batch_size, len(split)))),
        batch_size=batch_size,
        progress=False,
    )
    best_a = best_b = best_c = 0.0
    images = split.as_array()
    for _ in range(repeats):  # interleaved, so a change in machine load hits all alike
        best_a = max(best_a, time_forward(backbone, pixels))
        best_b = max(best_b, time_full(backbone, split, batch_size=batch_size))
        best_c = max(best_c, time_preprocess(backbone, images, batch_size=batch_size))
    return best_a, best_b, best_c


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    device = resolve_device(args.device)
    image_size = args.image_size or (
        56 if args.backbone == "tiny-random" and not args.arch else 224
    )
    images, source = load_images(args.npz, args.n)
    split = ImageSplit(labels=np.zeros(len(images), dtype=np.int64), images=images)
    if args.arch == "base":
        base = vit_b14(image_size, device, resize=args.resize)
    else:
        cfg = BackboneConfig(
            name=args.backbone, image_size=image_size, resize=args.resize, device=args.device
        )
        base = load_backbone(cfg, seed=0)
    pixels = [
        base.preprocess(images[i : i + args.batch_size])
        for i in range(0, len(images), args.batch_size)
    ]

    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()})"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; backbone: {base.name}, {image_size} px, "
        f"{args.resize}; images: {source}; n={len(images)}, batch={args.batch_size}, best of {args.repeats}"
    )
    print()
    print(
        "| precision | (a) forward only, img/s | (b) full extraction, img/s | (b)/(a) | (c) preprocess only, img/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for precision in args.precisions:
        backbone = dataclasses.replace(base, dtype=precision)
        a, b, c = measure(backbone, pixels, split, batch_size=args.batch_size, repeats=args.repeats)
        print(f"| {precision} | {a:.1f} | {b:.1f} | {b / a:.3f} | {c:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
