"""Run the whole study (``dvc repro``) in a scratch copy of the project and keep its report.

The copy is a fresh git + DVC repository holding ``dvc.yaml``, ``params.yaml`` and the four
packages, exactly as a user's checkout runs them; ``--set`` overrides go into its ``params.yaml``
(validated like any params file) and MLflow logs to a sqlite store inside it. Afterwards the
report of each dataset (``reports/<ds>/report.md``, ``tradeoff.csv``, the Pareto PNGs), the
headline numbers (``metrics/report/<ds>.json``) and a ``RUN.md`` with the command and its wall
time are copied to ``--out``; the MLflow store stays in ``--work`` (``mlflow ui
--backend-store-uri sqlite:///<work>/mlflow.db`` shows the study as one parent run).

``--features pixels`` feeds the raw pixels of the official MedMNIST files through the
bring-your-own-embeddings source (no backbone download; stand-in features, see bench/README.md);
``--features tiny-random`` runs the offline random backbone (meaningless numbers, every stage);
``--features dinov2`` the default backbone (needs the Hugging Face cache)::

    python bench/bench_study.py --root ../shared/data/medmnist --features pixels \\
        --datasets breastmnist --out bench/study-breastmnist-pixels \\
        --set 'train.methods=[dpsh,csq,tcl,hashnet,itq]' --set 'train.bits=[12,48]'
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_utility import pixel_embeddings  # noqa: E402

from pipeline.common import parse_overrides  # noqa: E402
from pipeline.config import load_params, set_dotted  # noqa: E402

log = logging.getLogger("bench_study")
PACKAGES = ("pipeline", "hashers", "retrieval", "privacy")


def study_params(args: argparse.Namespace, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The scratch copy's params.yaml: the project's, the features' data sources, ``--set``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    sets: dict[str, Any] = {
        "data.root": str(Path(args.root).resolve()),
        "data.download": False,
        "data.datasets": list(args.datasets),
        "tracking.uri": f"sqlite:///{work / 'mlflow.db'}",
    }
    for ds in args.datasets:
        if args.features == "pixels":
            npz = pixel_embeddings(Path(args.root), ds, work / f"{ds}-pixels.npz")
            sets[f"data.sources.{ds}"] = {"kind": "embeddings", "path": str(npz)}
    if args.features == "tiny-random":
        sets.update({"backbone.name": "tiny-random", "backbone.image_size": 56})
    sets.update(overrides)
    for dotted, value in sets.items():
        set_dotted(raw, dotted, value)
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder of the MedMNIST .npz files")
    parser.add_argument("--features", choices=("pixels", "tiny-random", "dinov2"), required=True)
    parser.add_argument("--datasets", nargs="+", default=["breastmnist"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--out", type=Path, required=True, help="where the reports are copied")
    parser.add_argument("--work", type=Path, help="scratch study folder (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = (args.work or Path(tempfile.mkdtemp(prefix="hashaudit-study-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    for pkg in PACKAGES:
        shutil.rmtree(work / pkg, ignore_errors=True)
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    raw = study_params(args, work, parse_overrides(args.overrides))
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(work / "params.yaml")  # a bad --set stops here, naming the key
    env = {**os.environ, "PYTHONPATH": str(work), "HASHAUDIT_TRACKING": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if not (work / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True, env=env)
    log.info("study in %s", work)
    # a --work of an earlier run: dvc repro reruns only the stages whose inputs changed, so its
    # wall time is not the whole study's
    resumed = (work / "dvc.lock").exists()
    if resumed:
        log.warning("%s holds an earlier run's dvc.lock: unchanged stages are not rerun", work)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=work, check=True, env=env)
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:
        shutil.copytree(work / "reports" / ds, args.out / ds, dirs_exist_ok=True)
        shutil.copy(work / "metrics" / "report" / f"{ds}.json", args.out / ds / "headline.json")
    command = shlex.join(["python", "bench/bench_study.py", *(argv or sys.argv[1:])])
    (args.out / "RUN.md").write_text(
        f"```bash\n{command}\n```\n\n`dvc repro` wall time: {wall:.0f} s "
        f"({os.cpu_count()} CPUs); scratch study: {work}\n"
        + (
            "\nResumed: the scratch study already held an earlier run's dvc.lock, so the "
            "stages DVC found unchanged were not rerun and the wall time is not the whole "
            "study's.\n"
            if resumed
            else ""
        )
    )
    log.info("dvc repro: %.0f s; reports in %s", wall, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
