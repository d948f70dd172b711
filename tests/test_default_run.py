"""The embedded default: the synthetic cards say what the generator does, the tiny model's cache heals, and
the injected bias is found on synth_cxr and not on synth_cxr_fair."""

from __future__ import annotations

import itertools

import pytest
import torch

from fairbench.data import synth
from fairbench.data.task import get_task
from fairbench.pipeline import RunConfig, run_cell


def test_cards_spell_out_the_generator_presets():
    biased = get_task("synth_cxr").dataset_options
    fair = get_task("synth_cxr_fair").dataset_options
    for key, value in synth.BIASED_DEFAULT.items():
        assert biased[key] == value, key
    for key, value in synth.FAIR_DEFAULT.items():
        assert fair[key] == value, key
    assert fair["bias"] == []
    assert get_task("synth_cxr").synthetic and get_task("synth_cxr_fair").synthetic


def test_corrupt_weight_cache_is_rebuilt_and_said(tiny_tasks_dir, capsys, tmp_path, monkeypatch):
    from fairbench.models.base import get_model_card
    from fairbench.models.tinyclip import pretrained_weights

    # A private cache, so both builds happen here under the same torch thread count: the weights' bytes depend
    # on it (float summation order), and the session cache may hold a build made under another count.
    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path))
    get_task("synth_tiny", [tiny_tasks_dir])
    card = get_model_card("tinyclip")
    path = pretrained_weights(card, "synth_tiny")
    assert path.is_relative_to(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])  # truncated, as after a crash or a full disk
    capsys.readouterr()
    again = pretrained_weights(card, "synth_tiny")
    err = capsys.readouterr().err
    assert again == path
    assert "unreadable" in err and "rebuilding" in err
    # a deterministic rebuild: the same tensors (the header's metadata order is not stable, so not the same bytes)
    from safetensors.torch import load, load_file

    rebuilt, original = load_file(str(path)), load(good)
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)


def _run(task: str, out) -> dict:
    cfg = RunConfig(task=task, model="tinyclip", adapt="zeroshot", seed=0, out=out, device="cpu", n_boot=300)
    return run_cell(cfg).metrics["metrics"]


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    return _run("synth_cxr", out), _run("synth_cxr_fair", out)


@pytest.mark.slow
def test_biased_card_shows_the_injected_age_gap(default_runs):
    biased, _ = default_runs
    age = biased["attributes"]["age"]
    young, old = age["groups"]["<60"], age["groups"][">=60"]
    assert old["auc"] < young["auc"]
    # the gap is real, not noise: the old group's whole interval lies below the young group's estimate
    assert biased["ci"]["attributes"]["age"]["groups"][">=60"]["auc"][1] < young["auc"]
    assert age["es_auc"] < biased["overall"]["auc"]


@pytest.mark.slow
def test_fair_card_gaps_stay_within_bootstrap_noise(default_runs):
    _, fair = default_runs
    assert fair["overall"]["auc"] > 0.75  # the model works, so "no gap" is not "no signal"
    for attr, a in fair["attributes"].items():
        if "*" in attr:
            continue
        cis = fair["ci"]["attributes"][attr]["groups"]
        for g, h in itertools.combinations(a["groups"], 2):
            (lo_g, hi_g), (lo_h, hi_h) = cis[g]["auc"], cis[h]["auc"]
            assert lo_g <= hi_h and lo_h <= hi_g, (attr, g, h, cis[g]["auc"], cis[h]["auc"])


_BUILD = """
import sys
from fairbench.data.task import get_task
from fairbench.models.base import get_model_card
from fairbench.models.tinyclip import pretrained_weights
get_task("synth_tiny", [sys.argv[1]])
print(pretrained_weights(get_model_card("tinyclip"), "synth_tiny"))
"""


def test_concurrent_first_uses_pretrain_once(tiny_tasks_dir, tmp_path):
    """Two processes (say, a sweep's two workers) that need the weights at once: one builds, the other waits
    for the lock and then loads the same file."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "FAIRBENCH_CACHE": str(tmp_path / "cache"), "FAIRBENCH_PROGRESS": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(tiny_tasks_dir)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    errs = [err for _, err in outs]
    built = [e for e in errs if "pretraining 'tinyclip' contrastively" in e]
    assert len(built) == 1, errs
    # the other process waited on the lock (or started after the file was complete) and built nothing
    other = errs[1 - errs.index(built[0])]
    assert "contrastively" not in other and (other.strip() == "" or "waiting for another process" in other), errs
    assert list((tmp_path / "cache" / "tinyclip").glob("*.tmp")) == []


_BUILD_UNDER_THREADS = """
import dataclasses, sys
import torch
from fairbench.data.task import get_task
from fairbench.models.base import get_model_card
from fairbench.models.tinyclip import pretrained_weights
torch.set_num_threads(int(sys.argv[2]))
get_task("synth_tiny", [sys.argv[1]])
card = get_model_card("tinyclip")
# a short pretraining (8 steps), enough for the summation order to show in the weights
card = dataclasses.replace(card, options={**card.options, "pretrain": {"epochs": 2, "batch_size": 32,
                                                                      "max_samples": 128}})
path = pretrained_weights(card, "synth_tiny")
assert torch.get_num_threads() == int(sys.argv[2]), "the caller's thread count was not restored"
print(path)
"""


@pytest.mark.slow
def test_pretraining_gives_the_same_weights_under_any_thread_count(tiny_tasks_dir, tmp_path, monkeypatch):
    """A sweep's cells build the weights under different torch thread counts (a Ray task's CPUs, a local
    worker's CPUs / workers): the weights must not depend on which one built the cache first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    built = {}
    for threads in (1, 2):
        env = {**os.environ, "FAIRBENCH_CACHE": str(tmp_path / f"cache{threads}"), "FAIRBENCH_PROGRESS": "0"}
        proc = subprocess.run([sys.executable, "-c", _BUILD_UNDER_THREADS, str(tiny_tasks_dir), str(threads)],
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        built[threads] = Path(proc.stdout.strip())
    assert built[1].name == built[2].name  # the same cache key
    one, two = load_file(str(built[1])), load_file(str(built[2]))
    assert one.keys() == two.keys()
    differ = [k for k in one if not torch.equal(one[k], two[k])]
    assert not differ, f"{len(differ)} of {len(one)} tensors differ, e.g. {differ[:3]}"
    from fairbench.models.tinyclip import PRETRAIN_THREADS, pretrain_provenance

    assert pretrain_provenance(built[2]) == {"pretrain_threads": PRETRAIN_THREADS}
    # metrics.json's model.weights says so too (the model is built from the cache the 2-thread process filled)
    import dataclasses

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "cache2"))
    get_task("synth_tiny", [tiny_tasks_dir])
    card = get_model_card("tinyclip")
    card = dataclasses.replace(card, options={**card.options, "pretrain": {"epochs": 2, "batch_size": 32,
                                                                          "max_samples": 128}})
    model = build_model(card, "pretrain:synth_tiny", torch.device("cpu"))
    assert model.weights_info["file"] == str(built[2]) and model.weights_info["pretrain_threads"] == 1


# -- identical numbers on every machine (issue 22 item 4) ------------------------------------------------------
def _shipped_files():
    from fairbench.models.tinyclip import SHIPPED_DIR

    return SHIPPED_DIR / "tinyclip-synth_cxr.safetensors", SHIPPED_DIR / "tinyclip-synth_cxr.json"


def test_shipped_weights_are_the_shipped_cards_and_intact():
    """The package ships tinyclip's pretrain:synth_cxr weights (fp16), built for exactly the key that the card and
    generator as shipped give; a change to either without `--rebuild` fails here, not silently at a user's."""
    import hashlib
    import json

    from safetensors import safe_open

    from fairbench.models.base import get_model_card
    from fairbench.models.tinyclip import pretrain_key, shipped_weights

    weights, manifest_path = _shipped_files()
    manifest = json.loads(manifest_path.read_text())
    card = get_model_card("tinyclip")
    assert card.weights_source == "pretrain:synth_cxr"
    assert manifest["key"] == pretrain_key(card, "synth_cxr"), "rebuild: python -m fairbench.models.tinyclip --rebuild"
    assert manifest["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights.stat().st_size < 12e6  # a few MB in the wheel
    with safe_open(str(weights), framework="pt") as fh:
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert "F16" in dtypes and "F32" not in dtypes, dtypes
    found = shipped_weights(card, "synth_cxr")
    assert found is not None and found[0] == weights


def test_a_changed_shipped_file_is_a_one_line_error(tmp_path, monkeypatch):
    import shutil

    from fairbench.errors import WeightsError
    from fairbench.models import tinyclip
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    weights, manifest = _shipped_files()
    copy = tmp_path / "shipped"
    copy.mkdir()
    shutil.copy(manifest, copy / manifest.name)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (copy / weights.name).write_bytes(bytes(data))
    monkeypatch.setattr(tinyclip, "SHIPPED_DIR", copy)
    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError) as exc:
        build_model(get_model_card("tinyclip"), None, torch.device("cpu"))
    msg = str(exc.value)
    assert "\n" not in msg and str(copy / weights.name) in msg and "sha256" in msg and "--rebuild" in msg
    assert not (tmp_path / "cache" / "tinyclip").exists()  # no silent fallback to pretraining


def test_pretrained_cache_files_follow_the_umask(tiny_tasks_dir, tmp_path, monkeypatch):
    """Cached weights are written like other files: 0666 less the umask (mkstemp made them 0600)."""
    import dataclasses
    import os
    import stat

    from fairbench.models.base import get_model_card
    from fairbench.models.tinyclip import pretrained_weights

    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path))
    get_task("synth_tiny", [tiny_tasks_dir])
    card = get_model_card("tinyclip")
    card = dataclasses.replace(card, options={**card.options, "pretrain": {"epochs": 1, "batch_size": 32,
                                                                          "max_samples": 64}})
    old = os.umask(0o022)
    try:
        path = pretrained_weights(card, "synth_tiny")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


_CELLS = """
import sys
from pathlib import Path
from fairbench.pipeline import RunConfig, run_cell
for adapt in ("zeroshot", "linear_probe"):
    run_cell(RunConfig(task="synth_cxr", model="tinyclip", adapt=adapt, seed=0, out=Path(sys.argv[1]), device="cpu",
                       n_boot=50))
"""


def _numbers(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


@pytest.mark.slow
def test_default_cells_are_identical_under_other_vector_kernels(tmp_path):
    """The default cell (tinyclip zero-shot on synth_cxr) and a linear probe give the same predictions
    (max |dp| <= 1e-5) and the same reported metrics under the machine's own vector kernels and under AVX2
    ones (torch's and MKL's), each from a fresh cache: the weights are shipped, not pretrained per machine, and
    the probe is solved to its optimum. OPENBLAS_CORETYPE is left as the machine sets it."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    runs, procs = {}, {}
    for name, extra in (("default", {}), ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"})):
        env = {**{k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")},
               "FAIRBENCH_CACHE": str(tmp_path / f"cache-{name}"), "FAIRBENCH_PROGRESS": "0", **extra}
        runs[name] = tmp_path / f"out-{name}"
        procs[name] = subprocess.Popen([sys.executable, "-c", _CELLS, str(runs[name])], env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for proc in procs.values():  # both ran at once
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err[-3000:]
        assert "pretraining" not in err, "the default run pretrained instead of using the shipped weights"
    for adapt in ("zeroshot", "linear_probe"):
        cells = [runs[name] / "synth_cxr" / "tinyclip" / adapt / "seed0" for name in ("default", "avx2")]
        a, b = (pd.read_parquet(c / "predictions.parquet") for c in cells)
        assert a["sample_id"].tolist() == b["sample_id"].tolist()
        probs = [c for c in a.columns if c.startswith("prob_")]
        dp = float(np.max(np.abs(a[probs].to_numpy() - b[probs].to_numpy())))
        assert dp <= 1e-5, (adapt, dp)
        ma, mb = (json.loads((c / "metrics.json").read_text()) for c in cells)
        assert ma["model"]["weights"]["shipped"] is True
        assert ma["model"]["weights"]["file_sha256"] == json.loads(_shipped_files()[1].read_text())["sha256"]
        assert ma["model"]["weights"]["sha256"] == mb["model"]["weights"]["sha256"]
        assert ma["threshold"] == mb["threshold"] or abs(ma["threshold"]["value"] - mb["threshold"]["value"]) <= 1e-5
        if adapt == "linear_probe":
            fa, fb = ma["adapt"]["fitted"], mb["adapt"]["fitted"]
            assert fa["C"] == fb["C"] and fa["converged"] and fb["converged"]
        na, nb = dict(_numbers(ma["metrics"])), dict(_numbers(mb["metrics"]))
        assert na.keys() == nb.keys()
        moved = {k: (na[k], nb[k]) for k in na
                 if not (na[k] == nb[k] or (isinstance(na[k], float) and isinstance(nb[k], float)
                                            and abs(na[k] - nb[k]) <= 1e-5))}
        assert not moved, (adapt, dict(list(moved.items())[:5]))
