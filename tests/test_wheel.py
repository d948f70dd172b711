"""The built wheel carries the task cards, model cards and shipped tinyclip weights, and an installed copy finds
them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("fairbench-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_task_and_model_cards(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT / "tasks").as_posix() for p in (ROOT / "tasks").rglob("*") if p.is_file()]
    assert shipped, "the repository has no task files?"
    for rel in shipped:
        assert f"fairbench/_tasks/{rel}" in names, rel
    assert "fairbench/models/cards/tinyclip.yaml" in names
    assert "fairbench/cli.py" in names
    templates = ROOT / "fairbench" / "report" / "templates"
    for name in ("base.html", "index.html", "task.html", "cell.html", "macros.html", "site.css", "sort.js"):
        assert (templates / name).is_file(), name
        assert f"fairbench/report/templates/{name}" in names, name  # fairbench report needs them installed
    # the pretrained tinyclip weights of the default run, and their manifest (sha256 checked at load)
    for name in ("tinyclip-synth_cxr.safetensors", "tinyclip-synth_cxr.json"):
        assert (ROOT / "fairbench" / "models" / "shipped" / name).is_file(), name
        assert f"fairbench/models/shipped/{name}" in names, name


def test_unpacked_wheel_finds_its_bundled_tasks(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = ("import fairbench.data.task as t; d = t.builtin_tasks_dir(); print(d); "
            "print(sorted(t.discover_tasks()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    first, tasks = proc.stdout.splitlines()[:2]
    assert Path(first) == tmp_path / "fairbench" / "_tasks"
    assert "'synth_cxr'" in tasks and "'synth_cxr_fair'" in tasks
    # an installed copy finds its shipped tinyclip weights, intact, for the shipped card (no pretraining)
    code = ("from fairbench.models.base import get_model_card; from fairbench.models.tinyclip import shipped_weights; "
            "print(shipped_weights(get_model_card('tinyclip'), 'synth_cxr')[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == tmp_path / "fairbench" / "models" / "shipped" / "tinyclip-synth_cxr.safetensors"


def test_wheel_bakes_in_the_commit_it_was_built_from(wheel, tmp_path):
    """issue 21 item 8: a non-editable install recorded provenance.git_commit null. The wheel carries the commit
    (read here from git itself) and an installed copy records it, saying where it came from."""
    import json

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fairbench/_build_info.py" in names
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = ("import json; from fairbench.results import provenance; "
            "p = provenance(device='cpu', started_at='x', duration_s=0); "
            "print(json.dumps({k: p[k] for k in ('git_commit', 'git_dirty', 'git_commit_source')}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["git_commit"] == head and got["git_commit_source"] == "build"
    assert isinstance(got["git_dirty"], bool)
