"""bench/bench_attacks.py: what its CPU column counts."""

from __future__ import annotations

import os
import time


class _FakeAttack:
    """Stands in for an attack; ``burn`` CPU seconds are spent in a forked child (as the
    membership attack's shadow heads train in forked workers, privacy/membership.py)."""

    def __init__(self, burn: float) -> None:
        self.burn = burn

    def fit(self, aux):
        return self

    def run(self, victims):
        if self.burn:
            pid = os.fork()
            if pid == 0:  # the child: busy for ``burn`` s of its own CPU time
                t = time.process_time()
                while time.process_time() - t < self.burn:
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
        keys = ("test/top1", "test/r0/share_unique", "test/cosine", "test/psnr", "test/accuracy")
        return {**dict.fromkeys(keys, 0.0), "auc": 0.5, "auc_baseline": 0.5}


def test_membership_cpu_counts_forked_shadow_workers(monkeypatch, tmp_path) -> None:
    import bench.bench_attacks as ba
    import hashers.trainer
    from privacy import registry

    monkeypatch.setitem(ba.SIZES, "tiny", (40, 30, 30, 2))
    monkeypatch.setattr(hashers.trainer, "fit", lambda *a, **k: None)
    monkeypatch.setattr(
        registry, "build", lambda name, *a, **k: _FakeAttack(1.0 if name == "membership" else 0.0)
    )
    out = tmp_path / "r.md"
    assert ba.main(["--size", "tiny", "--bits", "16", "--out", str(out)]) == 0
    row = next(r for r in out.read_text().splitlines() if r.startswith("| membership |"))
    cpu = float(row.split("|")[3])
    # the child spent 1.0 s of CPU; time.process_time() of the parent saw ~0.0 of it
    assert cpu >= 0.95, row
