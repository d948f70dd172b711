"""The committed sweep files (one per seed paper, and the synthetic leaderboards') parse and list their cells."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SWEEPS = Path(__file__).resolve().parent.parent / "leaderboards" / "sweeps"
PAPERS = {"sun_isbi2025": ("nih6x200", 4 * 5 * 3), "fairclip_cvpr2024": ("fairvlmed", 2 * 4 * 3),
          "robust_fair_2025": ("fairvlmed", 1 * 4 * 3)}


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_seed_paper_sweeps_dry_run_without_data(tmp_path, name):
    task, n_cells = PAPERS[name]
    proc = subprocess.run([sys.executable, "-m", "fairbench", "sweep", str(SWEEPS / f"{name}.sweep.yaml"),
                           "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "CI": "true"}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if "to run" in ln and ln.startswith("│")]
    assert len(rows) == n_cells and all(task in ln for ln in rows)


def test_every_committed_sweep_file_loads():
    from fairbench.sweep.grid import load_sweep_file

    files = sorted(SWEEPS.glob("*.sweep.yaml"))
    assert {f.name.removesuffix(".sweep.yaml") for f in files} >= set(PAPERS)
    for f in files:
        spec = load_sweep_file(f)
        assert spec is not None
