"""Sweeps: grid expansion, sweep files, failure isolation, resume after an interruption, and each executor.

Most tests run a fake cell (it writes a small metrics.json) so they take milliseconds; the executor tests at
the end run real tiny cells (synth_tiny, random weights, no bootstrap) in worker processes.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fairbench.errors import FairbenchError
from fairbench.results import write_json
from fairbench.sweep import (
    CellJob,
    SweepSpec,
    load_sweep_file,
    parse_adapt_args,
    parse_seeds,
    plan,
    read_error,
    run_job,
    run_sweep,
)
from fairbench.sweep.executors import make_executor

# -- a fake cell: what run_cell leaves behind, without a model ------------------------------------------


def fake_cell(job: CellJob) -> bool:
    """Writes a minimal complete cell. adapt 'boom' raises, 'die' kills the worker process."""
    cfg = job.config
    if (job.path / "metrics.json").exists():
        return True
    if cfg["adapt"] == "boom":
        raise FairbenchError(f"cell {job.key} exploded on purpose")
    if cfg["adapt"] == "die":
        os._exit(7)
    if cfg["adapt"] == "held":
        from fairbench.locking import CellBusyError

        raise CellBusyError(f"cell {job.path} is being computed by process 1")
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.path / "metrics.json", {"schema_version": 1, "cell": job.key, "pid": os.getpid()})
    return False


fake_runner = functools.partial(run_job, cell=fake_cell)


def fake_spec(out: Path, adapts=("a", "b"), seeds=(0, 1, 2), **kw) -> SweepSpec:
    return SweepSpec(tasks=["t"], models=["m"], adapts=list(adapts), seeds=list(seeds), options={"out": out}, **kw)


def metrics_files(out: Path) -> list[Path]:
    return sorted(out.rglob("metrics.json"))


# -- grid and sweep files -------------------------------------------------------------------------------


def test_parse_seeds_lists_ranges_and_duplicates():
    assert parse_seeds(["0,1", "3-5", 1, "2"]) == [0, 1, 3, 4, 5, 2]
    with pytest.raises(FairbenchError, match="seed 'x'"):
        parse_seeds(["x"])
    with pytest.raises(FairbenchError, match="backwards"):
        parse_seeds(["5-3"])


def test_adapt_args_scoped_and_global():
    assert parse_adapt_args(["max_iter=5", "linear_probe.c_grid=1,2"]) == {
        "*": {"max_iter": "5"}, "linear_probe": {"c_grid": "1,2"}}
    with pytest.raises(FairbenchError, match="KEY=VALUE"):
        parse_adapt_args(["oops"])


def test_grid_expands_in_order_without_duplicates(tmp_path):
    spec = SweepSpec(tasks=["t1", "t2"], models=["m"], adapts=["a", "b", "a"], seeds=[0, 1, 0],
                     options={"out": tmp_path})
    keys = [c.key for c in spec.cells()]
    assert len(keys) == 8 == len(set(keys))
    assert keys[:4] == ["t1/m/a/seed0", "t1/m/a/seed1", "t1/m/b/seed0", "t1/m/b/seed1"]
    assert spec.cell_path(spec.cells()[0]) == tmp_path / "t1" / "m" / "a" / "seed0"
    with pytest.raises(FairbenchError, match="no models"):
        SweepSpec(tasks=["t"], adapts=["a"]).cells()


def test_sweep_file_paths_are_relative_to_the_file_and_the_cli_overrides(tmp_path):
    from fairbench.sweep.command import build_spec

    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "sweep.yaml"
    f.write_text(textwrap.dedent("""\
        tasks: [synth_tiny]
        models: tinyclip
        adapts: [zeroshot, linear_probe]
        seeds: 0-2
        out: ../results
        tasks_dir: [tasks]
        weights: random
        n_boot: 0
        adapt_args: {linear_probe: {max_iter: 50}}
        executor: local
        workers: 2
        threads: 1
        """))
    spec = load_sweep_file(f)
    assert spec.seeds == [0, 1, 2] and spec.models == ["tinyclip"]
    assert spec.out == (tmp_path / "results").resolve()
    assert spec.tasks_dirs == ((tmp_path / "conf" / "tasks").resolve(),)
    assert spec.executor_options == {"workers": 2} and spec.threads == 1
    cfg = spec.run_config(spec.cells()[-1])
    assert cfg["adapt_args"] == {"max_iter": 50} and cfg["weights"] == "random" and cfg["n_boot"] == 0
    merged = build_spec(f, tasks=None, models=None, adapts=["zeroshot"], seeds=["7"], executor=None, workers=1,
                        executor_args={}, threads=None, tasks_dirs=None, adapt_args=None,
                        options={"out": tmp_path / "elsewhere", "device": None})
    assert [c.key for c in merged.cells()] == ["synth_tiny/tinyclip/zeroshot/seed7"]
    assert merged.out == tmp_path / "elsewhere" and merged.executor_options == {"workers": 1}
    assert merged.options["weights"] == "random"  # not given on the command line: the file's value stays


def test_sweep_file_rejects_unknown_fields(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [a]\nmodel: [b]\n")
    with pytest.raises(FairbenchError, match="'model' is not a known field"):
        load_sweep_file(f)


def test_validation_names_typos_before_anything_runs(tmp_path, tiny_tasks_dir):
    base = dict(tasks=["synth_tiny"], models=["tinyclip"], adapts=["zeroshot"], options={"out": tmp_path},
                tasks_dirs=(tiny_tasks_dir,))
    with pytest.raises(FairbenchError, match="Did you mean 'synth_tiny'"):
        run_sweep(SweepSpec(**{**base, "tasks": ["synth_tiy"]}), runner=fake_runner)
    with pytest.raises(FairbenchError, match="unknown adapter"):
        run_sweep(SweepSpec(**{**base, "adapts": ["zeroshot", "linearprobe"]}), runner=fake_runner)
    with pytest.raises(FairbenchError, match="scope an argument"):
        SweepSpec(**{**base, "adapts": ["zeroshot", "linear_probe"]}, adapt_args={"*": {"max_iter": "5"}}).validate()
    with pytest.raises(FairbenchError, match="no option 'worker'"):
        make_executor("local", {"worker": 2})
    assert not tmp_path.joinpath("synth_tiny").exists()


# -- failures and resume (fake cells) -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_cell_is_recorded_and_the_rest_finish(tmp_path, workers):
    out = tmp_path / "r"
    spec = fake_spec(out, adapts=("a", "boom", "b"), seeds=(0, 1), executor_options={"workers": workers})
    report = run_sweep(spec, runner=fake_runner, validate=False)
    assert len(report.ran) == 4 and len(report.failed) == 2 and report.remaining == 0 and not report.ok
    err = read_error(out / "t" / "m" / "boom" / "seed1")
    assert err["message"] == "cell t/m/boom/seed1 exploded on purpose" and err["error_type"] == "FairbenchError"
    assert "Traceback" in err["traceback"] and err["cell"] == "t/m/boom/seed1"
    assert len(metrics_files(out)) == 4
    # rerun: only the failed cells run again (and fail again); complete cells are untouched
    stamps = {p: p.stat().st_mtime_ns for p in metrics_files(out)}
    again = run_sweep(spec, runner=fake_runner, validate=False)
    assert len(again.already_complete) == 4 and len(again.failed) == 2 and not again.ran
    assert {p: p.stat().st_mtime_ns for p in metrics_files(out)} == stamps


def test_error_record_is_cleared_when_the_cell_succeeds(tmp_path):
    out = tmp_path / "r"
    spec = fake_spec(out, adapts=("a",), seeds=(0,), executor_options={"workers": 0})
    cell = out / "t" / "m" / "a" / "seed0"
    cell.mkdir(parents=True)
    write_json(cell / "error.json", {"message": "old failure"})
    (cell / ".metrics.json.abc.tmp").write_text("{half")  # left by a killed writer
    assert plan(spec)[1] and run_sweep(spec, runner=fake_runner, validate=False).ok
    assert sorted(p.name for p in cell.iterdir()) == ["metrics.json"]


def test_a_worker_that_dies_fails_only_its_cell(tmp_path):
    out = tmp_path / "r"
    spec = fake_spec(out, adapts=("a", "die", "b"), seeds=(0,), executor_options={"workers": 2})
    report = run_sweep(spec, runner=fake_runner, validate=False)
    assert [o.key for o in report.failed] == ["t/m/die/seed0"]
    assert "worker process died (exit code 7)" in report.failed[0].error
    assert read_error(out / "t" / "m" / "die" / "seed0")["error_type"] == "WorkerLost"
    assert len(report.ran) == 2


INTERRUPTED = """\
import sys, time
from pathlib import Path
from fairbench.results import write_json
from fairbench.sweep import SweepSpec, run_sweep, run_job

def slow_cell(job):
    with open(Path(sys.argv[1]) / "runs.log", "a") as log:
        log.write(job.key + "\\n")
    time.sleep(0.4)
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.path / "predictions.json", {"rows": list(range(20000))})
    write_json(job.path / "metrics.json", {"schema_version": 1, "cell": job.key})
    return False

if __name__ == "__main__":
    import functools
    out = Path(sys.argv[1])
    spec = SweepSpec(tasks=["t"], models=["m"], adapts=["a", "b"], seeds=list(range(6)), options={"out": out},
                     executor_options={"workers": 2})
    report = run_sweep(spec, runner=functools.partial(run_job, cell=slow_cell), validate=False)
    print("RAN", len(report.ran), "SKIPPED", len(report.already_complete), "FAILED", len(report.failed))
"""


def start_script(tmp_path: Path, source: str) -> tuple[subprocess.Popen, Path]:
    """Run ``source`` as a script in a new session with this interpreter's path, its results under tmp/out."""
    script = tmp_path / "sweep_script.py"
    script.write_text(source)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def test_an_interrupted_sweep_finishes_only_the_rest(tmp_path):
    proc, out = start_script(tmp_path, INTERRUPTED)
    deadline = time.time() + 60
    while len(metrics_files(out)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep, with no chance to clean up
    proc.wait()
    first = {p.parent.relative_to(out).as_posix() for p in metrics_files(out)}
    assert 3 <= len(first) < 12, (len(first), proc.stderr.read())
    for p in metrics_files(out):
        json.loads(p.read_text())  # every complete cell is whole
    runs_before = (out / "runs.log").read_text().split()

    done = subprocess.run(proc.args, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"RAN {12 - len(first)} SKIPPED {len(first)} FAILED 0" in done.stdout
    runs_after = (out / "runs.log").read_text().split()[len(runs_before):]
    assert not set(runs_after) & first  # no complete cell ran again
    assert sorted(runs_after) == sorted(set(runs_after))  # nor any cell twice in the rerun
    cells = [p.parent for p in metrics_files(out)]
    assert len(cells) == 12
    for cell in cells:
        assert sorted(p.name for p in cell.iterdir()) == ["metrics.json", "predictions.json"], cell
        json.loads((cell / "predictions.json").read_text())


ORPHANED = """\
import os, sys, time
from pathlib import Path
from fairbench.results import write_json
from fairbench.sweep import SweepSpec, run_sweep, run_job

def slow_cell(job):
    with open(Path(sys.argv[1]) / "workers.log", "a") as log:
        log.write(f"{os.getpid()} {job.key}\\n")
    time.sleep(30)
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.path / "metrics.json", {"schema_version": 1, "cell": job.key})
    return False

if __name__ == "__main__":
    import functools
    spec = SweepSpec(tasks=["t"], models=["m"], adapts=["a", "b"], seeds=[0], options={"out": Path(sys.argv[1])},
                     executor_options={"workers": 2})
    run_sweep(spec, runner=functools.partial(run_job, cell=slow_cell), validate=False)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_workers_exit_when_the_driver_is_killed(tmp_path):
    proc, out = start_script(tmp_path, ORPHANED)
    log = out / "workers.log"
    try:
        deadline = time.time() + 120
        while (not log.exists() or len(log.read_text().splitlines()) < 2) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        workers = [int(line.split()[0]) for line in log.read_text().splitlines()]
        assert len(workers) == 2 and all(_running(pid) for pid in workers)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, mid-cell: nobody tells the workers
        proc.wait(10)
        deadline = time.time() + 5
        while any(_running(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(_running(pid) for pid in workers), "worker processes outlived their driver"
        assert not metrics_files(out)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of this test's process group


def test_a_cell_another_process_computes_is_a_recorded_skip(tmp_path):
    from fairbench.locking import cell_lock

    out = tmp_path / "r"
    spec = fake_spec(out, adapts=("a",), seeds=(0, 1), executor_options={"workers": 2})
    held = out / "t" / "m" / "a" / "seed1"
    with cell_lock(held):  # as if a `fairbench run` (or another sweep) were computing it
        report = run_sweep(spec, runner=fake_runner, validate=False)
        assert [p.name for p in held.iterdir()] == [".lock"]  # no error.json, no temporary file cleared
    assert [o.key for o in report.busy] == ["t/m/a/seed1"] and not report.failed and not report.ok
    assert f"is being computed by process {os.getpid()}" in report.busy[0].error
    assert [p.parent.name for p in metrics_files(out)] == ["seed0"]
    assert run_sweep(spec, runner=fake_runner, validate=False).ok  # free again: the rerun completes it
    held_inside = run_sweep(fake_spec(out, adapts=("held",), seeds=(0,), executor_options={"workers": 0}),
                            runner=fake_runner, validate=False)  # the pipeline's own lock found held
    assert [o.status for o in held_inside.outcomes] == ["busy"] and not (out / "t" / "m" / "held").exists()


# -- executors with real cells ---------------------------------------------------------------------------


def real_spec(out: Path, tasks_dir: Path, executor: str, tasks=("synth_tiny", "fairvlmed"),
              **executor_options) -> SweepSpec:
    """A real tiny cell that succeeds and, by default, one that fails (fairvlmed without its dataset)."""
    return SweepSpec(tasks=list(tasks), models=["tinyclip"], adapts=["zeroshot"], seeds=[0],
                     options={"out": out, "weights": "random", "device": "cpu", "n_boot": 0},
                     tasks_dirs=(tasks_dir,), executor=executor, executor_options=executor_options, threads=1)


def check_real_cells(out: Path, failing: bool = True) -> None:
    cell = out / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0"
    doc = json.loads((cell / "metrics.json").read_text())
    assert doc["task"]["name"] == "synth_tiny" and doc["model"]["weights"]["source"] == "random"
    assert doc["metrics"]["overall"]["n"] == 240
    assert sorted(p.name for p in cell.iterdir()) == ["metrics.json", "predictions.parquet"]
    if not failing:
        return
    err = read_error(out / "fairvlmed" / "tinyclip" / "zeroshot" / "seed0")
    assert err["error_type"] == "DataError" and "--data-root" in err["message"]


def check_one_real_cell(report, out: Path) -> None:
    assert [o.key for o in report.ran] == ["synth_tiny/tinyclip/zeroshot/seed0"] and report.ok
    check_real_cells(out, failing=False)


@pytest.mark.slow
def test_local_executor_real_cells_via_the_cli_then_resume(tmp_path, tiny_tasks_dir):
    from typer.testing import CliRunner

    from fairbench.cli import app

    out = tmp_path / "results"
    args = ["sweep", "--tasks", "synth_tiny,fairvlmed", "--models", "tinyclip", "--adapts", "zeroshot",
            "--seeds", "0", "--workers", "2", "--threads", "1", "--out", str(out), "--weights", "random",
            "--device", "cpu", "--n-boot", "0", "--tasks-dir", str(tiny_tasks_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # one cell failed
    spec = real_spec(out, tiny_tasks_dir, "local", workers=2)
    done, todo = plan(spec)
    assert [c.key for c in done] == ["synth_tiny/tinyclip/zeroshot/seed0"]
    assert [c.key for c in todo] == ["fairvlmed/tinyclip/zeroshot/seed0"]
    check_real_cells(out)
    assert "done 1, failed 1, remaining 0" in result.output
    # resume: the complete cell is not touched, only the failed one runs again
    metrics = out / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_sweep(real_spec(out, tiny_tasks_dir, "local", workers=0))
    assert len(again.already_complete) == 1 and [o.key for o in again.failed] == [todo[0].key]
    assert metrics.stat().st_mtime_ns == stamp
    # asked for other settings, the complete cell is not passed off as the answer: it fails with the reason
    # and its results stay
    changed = real_spec(out, tiny_tasks_dir, "local", tasks=("synth_tiny",), workers=0)
    changed.options["n_boot"] = 5
    assert plan(changed)[0] == []
    report = run_sweep(changed)
    assert not report.ok and [o.key for o in report.failed] == ["synth_tiny/tinyclip/zeroshot/seed0"]
    assert "0 bootstrap resamples, not 5" in read_error(metrics.parent)["message"]
    assert metrics.stat().st_mtime_ns == stamp
    # asked again as it was computed, the cell is complete and current, and the refusal is forgotten
    again = run_sweep(real_spec(out, tiny_tasks_dir, "local", tasks=("synth_tiny",), workers=0))
    assert again.ok and len(again.already_complete) == 1 and read_error(metrics.parent) is None


def test_an_outcome_records_the_cpu_seconds_its_cell_took(tmp_path):
    import resource

    def cpu() -> float:  # the reference: the kernel's account of this process
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def burn(job: CellJob) -> bool:  # 0.3 s of CPU by the kernel's account, however loaded the machine
        t0 = cpu()
        while cpu() - t0 < 0.3:
            pass
        return False

    before = cpu()
    outcome = run_job(CellJob(key="t/m/a/seed0", path=tmp_path / "cell", config={}), cell=burn)
    spent = cpu() - before
    assert outcome.status == "done" and 0.3 <= outcome.cpu_s <= spent + 0.02, (outcome.cpu_s, spent)


def test_cells_are_ordered_so_one_encode_serves_each_group():
    """Each (task, model) group's first cache-reading cell runs first, then the fine-tuning cells, then the rest
    (the expected order is written out by hand from the grid)."""
    from fairbench.sweep.driver import sharing_order

    spec = SweepSpec(tasks=["A", "B"], models=["m"], adapts=["lora", "mlp", "zeroshot", "fair_threshold"],
                     seeds=[0, 1], options={"out": Path("r")})
    got = [c.key for c in sharing_order(spec, spec.cells())]
    assert got == ["A/m/mlp/seed0", "B/m/mlp/seed0",
                   "A/m/lora/seed0", "A/m/lora/seed1", "B/m/lora/seed0", "B/m/lora/seed1",
                   "A/m/mlp/seed1", "A/m/zeroshot/seed0", "A/m/zeroshot/seed1", "A/m/fair_threshold/seed0",
                   "A/m/fair_threshold/seed1",
                   "B/m/mlp/seed1", "B/m/zeroshot/seed0", "B/m/zeroshot/seed1", "B/m/fair_threshold/seed0",
                   "B/m/fair_threshold/seed1"]
    # random weights: the seed draws the weights, so each seed is a group of its own
    spec.options["weights"] = "random"
    got = [c.key for c in sharing_order(spec, spec.cells())]
    assert got[:4] == ["A/m/mlp/seed0", "A/m/mlp/seed1", "B/m/mlp/seed0", "B/m/mlp/seed1"]
    # a mitigation adapter on an end-to-end backbone and a post-processor on a fine-tuned base encode nothing
    spec = SweepSpec(tasks=["A"], models=["m"], adapts=["groupdro", "fair_threshold", "resample", "linear_probe"],
                     adapt_args={"groupdro": {"backbone": "lora"}, "fair_threshold": {"base": "lora"}},
                     seeds=[0], options={"out": Path("r")})
    assert [c.adapt for c in sharing_order(spec, spec.cells())] == [
        "resample", "groupdro", "fair_threshold", "linear_probe"]
    # without the embedding cache there is nothing to share: the grid order
    spec.options["embedding_cache"] = False
    assert sharing_order(spec, spec.cells()) == spec.cells()


@pytest.mark.slow
def test_a_sweep_on_two_workers_encodes_each_split_once(tmp_path, tiny_tasks_dir, monkeypatch):
    """Four cache-reading cells of one (task, model) on two local workers: across the cells' metrics.json, each
    split's embedding-cache entry is missed (encoded) exactly once and read from the cache by every other cell."""
    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    # the first two start together and both ask for the train split first: one encodes, the other waits on its lock
    adapts = ["linear_probe", "resample", "zeroshot", "fair_threshold"]
    spec = SweepSpec(tasks=["synth_tiny"], models=["tinyclip"], adapts=adapts, seeds=[0],
                     options={"out": out, "weights": "random", "device": "cpu", "n_boot": 0},
                     adapt_args={"resample": {"epochs": 1}},
                     tasks_dirs=(tiny_tasks_dir,), executor="local", executor_options={"workers": 2}, threads=1)
    report = run_sweep(spec)
    assert report.ok and len(report.ran) == len(adapts)
    events = {}
    for a in adapts:
        doc = json.loads((out / "synth_tiny" / "tinyclip" / a / "seed0" / "metrics.json").read_text())
        for e in doc["embedding_cache"]["events"]:
            events.setdefault((e["split"], e["key"]), []).append(e["event"])
    assert sorted(split for split, _ in events) == ["test", "train", "val"]  # one entry per split, shared
    for (split, _), seen in events.items():
        assert seen.count("miss") == 1 and seen.count("hit") == len(adapts) - 1, (split, seen)


@pytest.mark.slow
def test_submitit_executor_local_cluster(tmp_path, tiny_tasks_dir):
    pytest.importorskip("submitit", reason="the submitit executor needs the 'slurm' extra")
    out = tmp_path / "results"
    report = run_sweep(real_spec(out, tiny_tasks_dir, "submitit", tasks=["synth_tiny"], cluster="local",
                                 poll_s=0.2))
    check_one_real_cell(report, out)
    assert any((out / ".submitit").rglob("*_log.out"))


def need_ray() -> None:
    """Skip without ray (the 'ray' extra), except in CI (``CI`` set, as .ci/run does), which installs it: there a
    missing ray fails the test, so a change that breaks sweeps on Ray cannot land green by skipping."""
    import importlib.util

    if importlib.util.find_spec("ray") is None and os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("ray is not installed, but CI runs the Ray executor's tests: pip install -e '.[test,ray]' "
                    "(.ci/run does)")
    pytest.importorskip("ray", reason="the ray executor needs the 'ray' extra")


@pytest.mark.slow
def test_ray_executor_local_cluster(tmp_path, tiny_tasks_dir):
    need_ray()
    out = tmp_path / "results"
    report = run_sweep(real_spec(out, tiny_tasks_dir, "ray", tasks=["synth_tiny"], local_cpus=2))
    check_one_real_cell(report, out)


def ray_probe_cell(job: CellJob) -> bool:
    """A fake cell for the Ray executor: it prints a line, then dies (adapt 'die') or writes a metrics.json
    saying which Ray instance and node ran it."""
    import ray

    print(f"probe line from {job.key}", file=sys.stderr, flush=True)
    if job.config["adapt"] == "die":
        time.sleep(1)  # the line above reaches the driver's log monitor first
        os._exit(7)
    ctx = ray.get_runtime_context()
    job.path.mkdir(parents=True, exist_ok=True)
    write_json(job.path / "metrics.json", {"schema_version": 1, "gcs_address": ctx.gcs_address,
                                           "node_id": ctx.get_node_id(), "cpus": ray.cluster_resources()["CPU"]})
    return False


class RayHead:
    """``ray start --head --block`` on a free port, in its own session (so its whole process group can be ended
    by id, leaving other Ray instances on the machine alone) and its own RAY_TMPDIR."""

    def __init__(self, tmpdir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmpdir = tmpdir
        self.address_file = tmpdir / "ray" / "ray_current_cluster"  # where ray.init(address=None) looks
        ray_cli = Path(sys.executable).with_name("ray")
        self.log = open(tmpdir / "head.log", "w")
        self.proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", f"--port={self.port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", "--object-store-memory=80000000", "--block"],
            env={**os.environ, "RAY_TMPDIR": str(tmpdir)}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.time() + 120
        while not self.address_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                pytest.fail(f"ray start --head did not come up: {(tmpdir / 'head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        self.address = self.address_file.read_text().strip()

    def stop(self) -> None:
        """Kill the head's process group (what a crashed head leaves: its session file stays)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        try:  # the group outlives its leader until every member is reaped
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture
def ray_head(monkeypatch):
    """A Ray head already running on this machine, found by ``ray.init()`` as a user's would be (RAY_TMPDIR
    is set for this test; a short /tmp path, as Ray's socket paths have a length limit)."""
    need_ray()
    import shutil
    import tempfile

    tmpdir = Path(tempfile.mkdtemp(prefix="fbray", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmpdir))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    head = RayHead(tmpdir)
    yield head
    head.stop()
    shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.slow
def test_ray_executor_starts_its_own_instance_beside_a_running_head_or_a_dead_ones_file(
        tmp_path, tiny_tasks_dir, ray_head, monkeypatch, capfd):
    import socket
    import types

    import fairbench.sweep.worker as worker_module
    from fairbench.sweep.executors.ray_tasks import NODE_FILE

    # the driver calls itself 'the-driver': a lost cell's error.json must name the worker's host instead
    monkeypatch.setattr(worker_module, "socket", types.SimpleNamespace(gethostname=lambda: "the-driver"))
    # Ray's workers import ray_probe_cell from this file (they inherit the environment of the instance's start)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "results"
    spec = fake_spec(out, adapts=("ok", "die"), seeds=(0,), executor="ray",
                     executor_options={"local_cpus": 2, "max_retries": 0})
    report = run_sweep(spec, runner=functools.partial(run_job, cell=ray_probe_cell), validate=False)
    assert [o.key for o in report.ran] == ["t/m/ok/seed0"] and [o.key for o in report.failed] == ["t/m/die/seed0"]
    ran = json.loads((out / "t" / "m" / "ok" / "seed0" / "metrics.json").read_text())
    assert ran["gcs_address"] != ray_head.address and ran["cpus"] == 2  # its own instance, local_cpus honoured
    died = out / "t" / "m" / "die" / "seed0"
    err = read_error(died)
    assert err["error_type"] == "WorkerLost" and err["host"] == socket.gethostname() != "the-driver"
    assert err["ray_node_id"] == ran["node_id"] and "ray task failed on" in err["message"]
    assert not (died / NODE_FILE).exists()
    forwarded = capfd.readouterr().err
    assert "probe line from t/m/ok/seed0" in forwarded and "probe line from t/m/die/seed0" in forwarded

    # the head dies and leaves its session file: a sweep neither waits for it nor ignores SIGTERM meanwhile
    ray_head.stop()
    assert ray_head.address_file.exists()
    out2 = tmp_path / "results2"
    args = ["sweep", "--tasks", "synth_tiny", "--models", "tinyclip", "--adapts", "zeroshot", "--executor", "ray",
            "--executor-arg", "local_cpus=1", "--threads", "1", "--out", str(out2), "--weights", "random",
            "--device", "cpu", "--n-boot", "0", "--tasks-dir", str(tiny_tasks_dir)]
    try:
        proc = subprocess.run([sys.executable, "-m", "fairbench", *args], capture_output=True, text=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the sweep hung on the dead head's session file")
    assert proc.returncode == 0, proc.stderr
    assert (out2 / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0" / "metrics.json").exists()


def test_ray_address_option_and_sweep_file_field(tmp_path):
    from fairbench.sweep.command import build_spec

    common = {"tasks": None, "models": None, "adapts": None, "seeds": None, "workers": None, "executor_args": {},
              "threads": None, "tasks_dirs": None, "adapt_args": None, "options": {}}
    spec = build_spec(None, executor="ray", ray_address="ray://head:10001", **common)
    assert spec.executor_options == {"address": "ray://head:10001"}
    with pytest.raises(FairbenchError, match=r"--ray-address applies to the ray executor, not 'local'"):
        build_spec(None, executor=None, ray_address="auto", **common)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("tasks: [t]\nmodels: [m]\nadapts: [a]\nexecutor: ray\nray_address: auto\n")
    assert load_sweep_file(sweep).executor_options == {"address": "auto"}
    sweep.write_text("tasks: [t]\nmodels: [m]\nadapts: [a]\nray_address: auto\n")
    with pytest.raises(FairbenchError, match=r"field 'ray_address' applies to the ray executor, not 'local'"):
        load_sweep_file(sweep)
    from test_cli import assert_one_line_error, fairbench

    proc = fairbench("sweep", "--tasks", "synth_cxr", "--models", "tinyclip", "--adapts", "zeroshot",
                     "--ray-address", "auto", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--ray-address applies to the ray executor", "--executor ray")


def test_ray_executor_init_arguments():
    need_ray()
    own = make_executor("ray", {"local_cpus": "2"}).init_kwargs()
    assert own["address"] == "local" and own["num_cpus"] == 2 and own["log_to_driver"] is True
    joined = make_executor("ray", {"address": "auto", "local_cpus": 2}).init_kwargs()
    assert joined["address"] == "auto" and "num_cpus" not in joined
    assert make_executor("ray", {"address": "local"}).init_kwargs()["address"] == "local"
    with pytest.raises(FairbenchError, match="'address' option"):
        make_executor("ray", {"init": {"address": "auto"}})


def test_missing_optional_dependency_is_a_one_line_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(FairbenchError, match=r"pip install 'fairbench\[ray\]'"):
        make_executor("ray", {})


def test_a_cells_thread_count_does_not_leak_into_the_caller(tmp_path, monkeypatch):
    import torch

    import fairbench.pipeline
    from fairbench.sweep.worker import run_cell_job

    seen = []

    class _Result:
        skipped = False

    def fake_run_cell(cfg):
        seen.append(torch.get_num_threads())
        return _Result()

    monkeypatch.setattr(fairbench.pipeline, "run_cell", fake_run_cell)
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    job = CellJob(key="k", path=tmp_path, config={"task": "synth_cxr", "model": "tinyclip", "adapt": "zeroshot"},
                  threads=other)
    assert run_cell_job(job) is False
    assert seen == [other]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "leaderboards").rglob("*.sweep.yaml")),
                         ids=lambda p: p.name)
def test_committed_sweep_files_validate(path):
    """The sweeps behind the committed leaderboards and the CI baseline parse and resolve every name."""
    spec = load_sweep_file(path)
    spec.validate()
    assert spec.cells()


def test_precision_is_a_sweep_option(tmp_path):
    """A sweep sets every cell's inference precision from its file or --precision (the CLI wins); an unknown
    precision is one line before anything runs."""
    from test_cli import assert_one_line_error, fairbench

    from fairbench.sweep.command import build_spec

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"tasks: [synth_cxr]\nmodels: [tinyclip]\nadapts: [zeroshot]\nout: {tmp_path / 'out'}\n"
                          "precision: bf16\n")
    spec = load_sweep_file(sweep_file)
    spec.validate()
    assert spec.run_config(spec.cells()[0])["precision"] == "bf16"
    spec = build_spec(sweep_file, tasks=None, models=None, adapts=None, seeds=None, executor=None, workers=None,
                      executor_args={}, threads=None, tasks_dirs=None, adapt_args=None,
                      options={"precision": "fp32"})
    assert spec.run_config(spec.cells()[0])["precision"] == "fp32"
    bad = tmp_path / "bad.yaml"
    bad.write_text(sweep_file.read_text().replace("bf16", "fp8"))
    proc = fairbench("sweep", str(bad), "--dry-run")
    assert_one_line_error(proc, "precision 'fp8'", "fp32, bf16, fp16")
    proc = fairbench("sweep", str(sweep_file), "--dry-run", "--precision", "fp8")
    assert_one_line_error(proc, "precision 'fp8'")
    assert not (tmp_path / "out").exists()


def test_sweep_summary_counts_read_as_english():
    """issue 21 item 15: "1 were already complete"."""
    from fairbench.progress import console
    from fairbench.sweep.progress import SweepProgress
    from fairbench.sweep.report import SweepReport

    report = SweepReport(cells=["a", "b"], already_complete=["a"])
    with console.capture() as cap:
        SweepProgress(live=False).finish(report)
    line = cap.get().splitlines()[0]
    assert line.startswith("sweep: 0 ran, 1 already complete, 0 failed, 1 remaining"), line
