"""The whole pipeline on a tiny synthetic config: layout, schema, provenance, resume and round trips."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from fairbench.pipeline import RunConfig, run_cell
from fairbench.results import SCHEMA_VERSION

TINY_WEIGHTS = "pretrain:synth_tiny"


def tiny_config(tmp_path, tasks_dir, **kw) -> RunConfig:
    base = dict(task="synth_tiny", model="tinyclip", adapt="zeroshot", seed=0, out=tmp_path / "results",
                weights=TINY_WEIGHTS, device="cpu", tasks_dirs=(tasks_dir,), n_boot=20)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def zeroshot_cell(tmp_path_factory, tiny_tasks_dir):
    tmp = tmp_path_factory.mktemp("zs")
    return run_cell(tiny_config(tmp, tiny_tasks_dir)), tmp


def test_cell_layout_and_predictions_schema(zeroshot_cell):
    result, tmp = zeroshot_cell
    assert result.path == tmp / "results" / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0"
    assert not result.skipped
    frame = pd.read_parquet(result.path / "predictions.parquet")
    for col in ("sample_id", "split", "label", "prob_normal", "prob_abnormal", "attr_sex", "attr_age", "attr_race"):
        assert col in frame.columns, col
    assert set(frame["split"]) == {"val", "test"}
    assert (frame["split"] == "test").sum() == 240 and (frame["split"] == "val").sum() == 120
    probs = frame[["prob_normal", "prob_abnormal"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert set(frame["attr_age"].dropna()) <= {"<60", ">=60"}
    assert set(frame["attr_sex"].dropna()) <= {"F", "M"}
    assert frame["sample_id"].is_unique
    assert set(frame["label"]) == {0, 1}


def test_metrics_json_contract(zeroshot_cell):
    result, _ = zeroshot_cell
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["task"]["name"] == "synth_tiny" and doc["task"]["synthetic"] is True
    assert len(doc["task"]["samples_sha256"]) == 64
    assert doc["model"]["name"] == "tinyclip"
    assert doc["model"]["weights"]["source"] == TINY_WEIGHTS and len(doc["model"]["weights"]["sha256"]) == 64
    assert doc["adapt"]["name"] == "zeroshot" and doc["adapt"]["params"] == {"ensemble": "family"}
    from fairbench.data.task import get_task

    declared = get_task("synth_cxr").prompts.ensemble or "mean_embedding"
    assert doc["adapt"]["fitted"]["zeroshot"]["rule"] == declared
    assert doc["seed"] == 0 and len(doc["config_sha256"]) == 64
    prov = doc["provenance"]
    for key in ("fairbench_version", "git_commit", "git_dirty", "packages", "device", "started_at", "duration_s"):
        assert key in prov, key
    assert prov["packages"]["torch"] and prov["device"] == "cpu"
    assert doc["threshold"]["value"] == 0.5
    m = doc["metrics"]
    assert 0.0 <= m["overall"]["auc"] <= 1.0 and m["overall"]["n"] == 240
    for attr in ("sex", "age", "race"):
        a = m["attributes"][attr]
        assert a["groups"], attr
        for key in ("es_auc", "dpd", "deodds"):
            assert key in a, (attr, key)
        assert sum(g["n"] for g in a["groups"].values()) == 240
    assert m["n_boot"] == 20


def test_skip_existing_then_overwrite(zeroshot_cell, tiny_tasks_dir):
    result, tmp = zeroshot_cell
    before = (result.path / "metrics.json").read_bytes()
    again = run_cell(tiny_config(tmp, tiny_tasks_dir))
    assert again.skipped and again.metrics["metrics"] == json.loads(before)["metrics"]
    redo = run_cell(tiny_config(tmp, tiny_tasks_dir, overwrite=True))
    assert not redo.skipped


def test_same_seed_recomputed_gives_identical_numbers(tmp_path, tiny_tasks_dir):
    """Same seed, same everything: identical numbers, with the embedding cache off so that both runs encode
    every image (with it on, the second run would replay the first run's embeddings)."""
    runs = [run_cell(tiny_config(tmp_path / name, tiny_tasks_dir, embedding_cache=False)) for name in ("a", "b")]
    for r in runs:
        assert not r.skipped and r.metrics["embedding_cache"] == {"enabled": False}
    a, b = (pd.read_parquet(r.path / "predictions.parquet") for r in runs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert runs[0].metrics["metrics"] == runs[1].metrics["metrics"]


def test_partial_cell_is_redone(tmp_path, tiny_tasks_dir):
    cfg = tiny_config(tmp_path, tiny_tasks_dir, n_boot=0)
    first = run_cell(cfg)
    (first.path / "metrics.json").unlink()  # as if the run died after writing predictions
    (first.path / "predictions.parquet").write_bytes(b"garbage")
    second = run_cell(cfg)
    assert not second.skipped
    assert pd.read_parquet(second.path / "predictions.parquet").shape[0] == 360


def test_a_complete_cell_computed_otherwise_is_not_reused(zeroshot_cell, tiny_tasks_dir):
    from fairbench.errors import ResultsError

    result, tmp = zeroshot_cell
    before = (result.path / "metrics.json").read_bytes()
    with pytest.raises(ResultsError, match=r"20 bootstrap resamples, not 30.*--overwrite"):
        run_cell(tiny_config(tmp, tiny_tasks_dir, n_boot=30))
    with pytest.raises(ResultsError, match=r"other adapter settings \(ensemble: 'family' -> 'max_logit'\)"):
        run_cell(tiny_config(tmp, tiny_tasks_dir, adapt_args={"ensemble": "max_logit"}))
    with pytest.raises(ResultsError, match="trained weights, not random ones"):
        run_cell(tiny_config(tmp, tiny_tasks_dir, weights="random"))
    assert (result.path / "metrics.json").read_bytes() == before  # nothing lost


def test_stale_reason_names_an_edited_card(zeroshot_cell, tiny_tasks_dir):
    from fairbench.adapters.base import ADAPTERS
    from fairbench.data.task import get_task
    from fairbench.models.base import get_model_card
    from fairbench.pipeline import stale_reason

    result, _ = zeroshot_cell
    doc = json.loads((result.path / "metrics.json").read_text())
    task, card = get_task("synth_tiny", [tiny_tasks_dir]), get_model_card("tinyclip")
    params = ADAPTERS.get("zeroshot")({}).params
    current = dict(task=task, card=card, adapt="zeroshot", params=params, n_boot=20, random_weights=False)
    assert stale_reason(doc, **current) is None
    edited = json.loads(json.dumps(doc))
    edited["task"]["card_sha256"] = "0" * 64
    assert "another version of the task card 'synth_tiny'" in stale_reason(edited, **current)
    edited = json.loads(json.dumps(doc))
    edited["model"]["card_sha256"] = "1" * 64
    assert "another version of the model card 'tinyclip'" in stale_reason(edited, **current)
    assert "adapter 'zeroshot', not 'linear_probe'" in stale_reason(doc, **{**current, "adapt": "linear_probe"})


def test_no_temporary_files_left(zeroshot_cell):
    result, _ = zeroshot_cell
    assert sorted(p.name for p in result.path.iterdir()) == ["metrics.json", "predictions.parquet"]


def test_linear_probe_selects_on_validation(tmp_path, tiny_tasks_dir):
    # the card's own weights (pretrained on synth_cxr's 2000 pairs, shared with the default-run tests through
    # the session cache); the 240 pairs of synth_tiny teach too little for a probe to mean much
    result = run_cell(tiny_config(tmp_path, tiny_tasks_dir, adapt="linear_probe", n_boot=0, weights=None))
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["selected_on"] == "val"
    assert fitted["C"] in [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    assert set(fitted["val_auc_by_C"]) == {"0.001", "0.01", "0.1", "1.0", "10.0", "100.0"}
    # a probe on the pretrained tinyclip's features finds the findings (about 0.84 on these 240 test samples)
    assert result.metrics["metrics"]["overall"]["auc"] > 0.7


def test_metrics_command_round_trips(zeroshot_cell, tmp_path, tiny_tasks_dir):
    from fairbench.report.recompute import recompute

    result, _ = zeroshot_cell
    doc = recompute(result.path / "predictions.parquet", task=None, n_boot=None, seed=None,
                    out=tmp_path / "re.json", tasks_dirs=(tiny_tasks_dir,))
    original = json.loads((result.path / "metrics.json").read_text())
    assert doc["metrics"] == original["metrics"]
    assert json.loads((tmp_path / "re.json").read_text())["metrics"] == original["metrics"]


class _RecordedBars:
    """Stands in for rich's Progress: records each bar's description, total and how far it advanced."""

    bars: list[list] = []

    def __init__(self, *columns, **kw) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def add_task(self, description: str, total=None, **fields) -> int:
        self.bars.append([description, total, 0])
        return len(self.bars) - 1

    def advance(self, task_id: int, n: float = 1) -> None:
        self.bars[task_id][2] += n

    def update(self, task_id: int, **fields) -> None:
        pass


@pytest.mark.usefixtures("one_torch_thread")
def test_validation_final_prediction_and_bootstrap_show_progress(tmp_path, micro_task_dir, monkeypatch):
    """Issue #14 item 17: the per-epoch validation, the final prediction and the bootstrap each have a bar."""
    import fairbench.progress

    monkeypatch.setenv("FAIRBENCH_PROGRESS", "1")
    monkeypatch.setattr(fairbench.progress, "Progress", _RecordedBars)
    monkeypatch.setattr(_RecordedBars, "bars", [])
    cfg = RunConfig(task="synth_micro_progress", model="tiny_medclip_vit", adapt="full_ft", seed=0,
                    out=tmp_path / "results", weights="random", device="cpu",
                    tasks_dirs=(micro_task_dir("synth_micro_progress"),), n_boot=10,
                    adapt_args={"epochs": "2", "batch_size": "16", "eval_batch_size": "8", "patience": "0"})
    run_cell(cfg)
    bars = _RecordedBars.bars
    val = [b for b in bars if b[0].startswith("predicting val")]
    test = [b for b in bars if b[0].startswith("predicting test")]
    assert len(val) == 2 + 1 and len(test) == 1, bars  # each epoch's validation, then the final val and test
    assert all(b[1] == 3 and b[2] == 3 for b in val + test), bars  # 24 images in batches of 8, every one counted
    assert any(b[0] == "metrics, 10 bootstrap resamples" for b in bars), bars
    monkeypatch.setenv("FAIRBENCH_PROGRESS", "0")  # and quiet stays quiet
    monkeypatch.setattr(_RecordedBars, "bars", [])
    run_cell(dataclasses.replace(cfg, overwrite=True))
    assert _RecordedBars.bars == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_result_files_get_the_usual_permissions(tmp_path, tiny_tasks_dir, umask):
    """Result files are created as ``open`` creates files (0666 less the umask), not 0600 (mkstemp's mode)."""
    import os
    import stat

    from fairbench.results import write_json

    old = os.umask(umask)
    try:
        result = run_cell(tiny_config(tmp_path, tiny_tasks_dir, n_boot=0))
        write_json(tmp_path / "baseline.json", {"a": 1})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in (result.path / "metrics.json", result.path / "predictions.parquet", tmp_path / "baseline.json"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path.name, oct(path.stat().st_mode))


def test_a_failed_run_leaves_no_empty_cell_folder(tmp_path, tiny_tasks_dir):
    from fairbench.errors import WeightsError

    out = tmp_path / "results"
    with pytest.raises(WeightsError):  # fails when the model is built, after the cell was locked
        run_cell(tiny_config(tmp_path, tiny_tasks_dir, weights=str(tmp_path / "missing.safetensors")))
    assert not out.exists()
    (out / "synth_tiny").mkdir(parents=True)  # folders that were there before stay
    with pytest.raises(WeightsError):
        run_cell(tiny_config(tmp_path, tiny_tasks_dir, weights=str(tmp_path / "missing.safetensors")))
    assert [p.name for p in out.rglob("*")] == ["synth_tiny"]


def hold_lock(cell):
    """A process that holds ``cell``'s lock until killed."""
    import subprocess
    import sys

    code = ("import sys, time; from fairbench.locking import cell_lock\n"
            f"with cell_lock({str(cell)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_cell_has_one_writer_at_a_time(tmp_path, tiny_tasks_dir):
    from fairbench.locking import CellBusyError, cell_lock

    cfg = tiny_config(tmp_path, tiny_tasks_dir, n_boot=0)
    cell = tmp_path / "results" / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0"
    holder = hold_lock(cell)
    try:
        with pytest.raises(CellBusyError, match=rf"cell {cell} is being computed by process {holder.pid}"):
            run_cell(cfg)
    finally:
        holder.kill()
        holder.wait()
    with cell_lock(cell):  # reentrant in one process (a sweep worker locks, then runs the pipeline)
        assert not run_cell(cfg).skipped
    assert sorted(p.name for p in cell.iterdir()) == ["metrics.json", "predictions.parquet"]


def test_the_lock_of_a_killed_writer_is_free(tmp_path):
    import signal
    import time

    from fairbench.locking import CellBusyError, cell_lock

    cell = tmp_path / "cell"
    proc = hold_lock(cell)
    try:
        with pytest.raises(CellBusyError, match=f"process {proc.pid}"), cell_lock(cell):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    t0 = time.time()
    with cell_lock(cell) as lock:  # the kernel dropped the dead writer's lock: no stale lock to clear
        assert lock.read_text().split()[0] == str(os.getpid())
    assert time.time() - t0 < 1 and not cell.exists()
