"""Membership inference by code stability: AUC against the perturbation SNR (privacy/membership.py).

The figures in ``privacy/membership.py``'s docstring come from this script: the overfit DPSH head
of ``tests/privacy/test_membership.py`` (32 bits, 40 train records with 60 % of the labels drawn at
random, 150 epochs), 8 shadow heads (``shadow_selection="in"``), 40 members and 40 non-members,
one seeded draw of the noise per SNR. It is a synthetic case chosen to make membership visible;
it fixed the default ``stability_snr_db`` (20 dB), never a data set's test split.

    python bench/bench_mi_snr.py        # about 1 min on 2 CPU cores; prints "snr_db auc" lines
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "privacy")]

import test_membership as case  # noqa: E402  (the test module's records and training helpers)

from hashers import registry as methods  # noqa: E402
from hashers.base import HeadSpec  # noqa: E402
from hashers.trainer import FitConfig  # noqa: E402
from privacy.base import CodeRelease  # noqa: E402
from privacy.membership import MembershipConfig, MembershipInference  # noqa: E402

SNRS_DB = (30.0, 20.0, 10.0, 3.0)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    recs = case.make_records(n=(40, 80, 40), dim=16, spread=0.7)
    rng = np.random.default_rng(1)
    for split in ("train", "test", "val"):  # 60 % random labels: a head that must memorise
        r = recs[split]
        y = np.where(rng.random(len(r)) < 0.6, rng.integers(0, 3, len(r)), r.y)
        object.__setattr__(r, "y", y)
        object.__setattr__(r, "y_multihot", np.eye(3, dtype=np.float32)[y])
    spec = HeadSpec(in_dim=16, n_bits=32, n_classes=3, hidden_dims=(256,), dropout=0.0)
    cfg = FitConfig(
        epochs=150, patience=150, batch_size=32, weight_decay=0.0, lr=3e-3, val_queries=40,
        progress=False,
    )  # fmt: skip
    target = case._trained("dpsh", recs["train"], recs["train"], spec=spec, cfg=cfg)
    for snr in SNRS_DB:
        attack = MembershipInference(
            CodeRelease.from_head(target),
            MembershipConfig(
                shadow_heads=8,
                candidates=40,
                shadow_selection="in",
                score="code_stability",
                workers=1,
                stability_snr_db=snr,
            ),
            make_head=lambda s: methods.build("dpsh", spec, seed=s),
            fit_config=cfg,
            n_classes=3,
        )
        out = attack.fit(recs["val"]).run(case._victims(recs))
        print(f"{snr:g} {out['auc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
