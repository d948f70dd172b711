"""bench/gpu_check.py: the CPU smoke variant runs end to end, and its comparison can fail."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1]), "FAIRBENCH_PROGRESS": "0"}
    env.pop("FAIRBENCH_CACHE", None)  # the script uses a private cache
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def test_cpu_smoke_variant_passes_zeroshot_and_lora_rows() -> None:
    proc = _run("--device", "cpu", "--small", "--skip", "encode,robust_fair,ddp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line for line in proc.stdout.splitlines()
            if line.startswith(("zeroshot", "lora"))}
    assert set(rows) == {"zeroshot fp32", "zeroshot amp", "lora amp"}, proc.stdout
    assert all(" PASS " in r for r in rows.values()), proc.stdout
    # bf16 autocast on CPU really changes the numbers (the row compares something), within its tolerance
    delta = float(rows["zeroshot amp"].split()[4])  # name (two words), img/s, peak MiB, max|dp|
    assert 0 < delta <= 5e-2, rows["zeroshot amp"]
    assert proc.stdout.rstrip().endswith("all PASS")


def test_max_delta_matches_samples_and_sees_a_change() -> None:
    mod = _module()
    a = pd.DataFrame({"split": ["test"] * 3, "sample_id": ["a", "b", "c"], "prob_x": [0.1, 0.2, 0.3],
                      "prob_y": [0.9, 0.8, 0.7]})
    b = a.iloc[::-1].reset_index(drop=True).copy()  # another order: matched by id, not by row
    assert mod.max_delta(a, b) == 0.0
    b.loc[b["sample_id"] == "b", "prob_y"] = 0.75
    assert mod.max_delta(a, b) == pytest.approx(0.05)
    with pytest.raises(AssertionError, match="different samples"):
        mod.max_delta(a, b.iloc[:2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_requested_without_cuda_is_one_line_and_exit_2() -> None:
    proc = _run("--device", "cuda")
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "error: --device cuda: no CUDA device here (use --device cpu --small for a smoke test)"]
