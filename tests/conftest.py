"""Test-wide settings: no network, quiet progress, and a private cache directory per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["FAIRBENCH_PROGRESS"] = "0"

TINY_TASK = """\
# A small synth_cxr for fast end-to-end tests: same generator and bias, fewer and smaller images.
include: {base}
name: synth_tiny
dataset:
  options:
    n: {{train: 240, val: 120, test: 240}}
evaluation:
  n_boot: 50
  min_group_size: 10
"""


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each session builds its own cached weights, unless FAIRBENCH_TEST_CACHE names a shared folder."""
    shared = os.environ.get("FAIRBENCH_TEST_CACHE")
    cache = Path(shared) if shared else tmp_path_factory.mktemp("fairbench-cache")
    os.environ["FAIRBENCH_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --tasks-dir holding `synth_tiny`, a small version of the shipped synth_cxr card."""
    from fairbench.data.task import builtin_tasks_dir

    root = tmp_path_factory.mktemp("tasks")
    (root / "synth_tiny").mkdir()
    base = builtin_tasks_dir() / "synth_cxr" / "synth_cxr.yaml"
    (root / "synth_tiny" / "synth_tiny.yaml").write_text(TINY_TASK.format(base=base))
    return root


MICRO_TASK = """\
# A very small synth_cxr for adapter, training and model tests: a few dozen images of 64 px.
include: {base}
name: {name}
dataset:
  options:
    n: {{train: {train}, val: {val}, test: {test}}}
    image_size: 64
evaluation:
  n_boot: 0
  min_group_size: 5
"""


@pytest.fixture(scope="session")
def micro_task_dir(tmp_path_factory: pytest.TempPathFactory):
    """``micro_task_dir(name, n=(train, val, test))``: a --tasks-dir holding the micro task ``name`` (each test
    module takes its own name, so their runs and caches never meet); 32/24/24 images unless ``n`` says."""
    from fairbench.data.task import builtin_tasks_dir

    made: dict[str, Path] = {}

    def make(name: str, n: tuple[int, int, int] = (32, 24, 24)) -> Path:
        if name not in made:
            root = tmp_path_factory.mktemp("tasks")
            (root / name).mkdir()
            base = builtin_tasks_dir() / "synth_cxr" / "synth_cxr.yaml"
            (root / name / f"{name}.yaml").write_text(MICRO_TASK.format(base=base, name=name, train=n[0], val=n[1],
                                                                        test=n[2]))
            made[name] = root
        return made[name]

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and the test machine is shared); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
