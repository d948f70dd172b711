"""The command line as a user meets it: help, listings, the summary, and one-line errors for mistakes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest


def fairbench(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CI": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fairbench", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr  # no traceback
    assert lines[0].startswith("error: ")
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def test_help_documents_every_run_option():
    proc = fairbench("run", "--help")
    assert proc.returncode == 0
    for opt in ("--task", "--model", "--adapt", "--seed", "--out", "--data-root", "--weights", "--device",
                "--overwrite", "--adapt-arg", "--n-boot", "--tasks-dir"):
        assert opt in proc.stdout, opt


@pytest.mark.parametrize("what, expected", [("tasks", ["synth_cxr", "synth_cxr_fair", "SYNTHETIC"]),
                                            ("models", ["tinyclip"]),
                                            ("adapters", ["zeroshot", "linear_probe"]),
                                            ("metrics", ["es_auc", "dpd", "deodds"])])
def test_ls(what, expected):
    proc = fairbench("ls", what, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for e in expected:
        assert e in proc.stdout, (e, proc.stdout)


def test_validate_passes_on_shipped_cards():
    proc = fairbench("validate")
    assert proc.returncode == 0, proc.stderr
    assert "0 with problems" in proc.stderr


def test_validate_reports_a_bad_user_card(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.yaml").write_text("name: broken\nversion: 1\nclasses: [a]\n")
    proc = fairbench("validate", "--tasks-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "broken.yaml" in proc.stderr and "field 'dataset' is required" in proc.stderr


@pytest.mark.parametrize("flag, value, fragments", [
    ("--model", "tinyclp", ["unknown model 'tinyclp'", "Did you mean 'tinyclip'", "Known models:"]),
    ("--task", "synth_cx", ["unknown task 'synth_cx'", "Did you mean 'synth_cxr'"]),
    ("--adapt", "zero_shot", ["unknown adapter 'zero_shot'", "Did you mean 'zeroshot'"]),
    ("--device", "tpu", ["--device 'tpu'"]),
])
def test_unknown_names_are_one_line_errors(tmp_path, flag, value, fragments):
    proc = fairbench("run", flag, value, "--out", str(tmp_path))
    assert_one_line_error(proc, *fragments)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_invalid_card_is_a_one_line_error(tmp_path):
    tasks = tmp_path / "tasks"
    (tasks / "mine").mkdir(parents=True)
    (tasks / "mine" / "mine.yaml").write_text(
        "name: mine\nversion: 1\ndataset: {loader: synth_cxr}\nclasses: [a, b]\nattributes: {sex: {bins: oops}}\n")
    proc = fairbench("run", "--task", "mine", "--tasks-dir", str(tasks), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "mine.yaml", "field 'attributes.sex.bins' must be a list")


def test_bad_adapter_argument(tmp_path):
    proc = fairbench("run", "--adapt-arg", "temperature=3", "--out", str(tmp_path))
    assert_one_line_error(proc, "adapter 'zeroshot' has no parameter 'temperature'")
    proc = fairbench("run", "--adapt-arg", "novalue", "--out", str(tmp_path))
    assert_one_line_error(proc, "expected KEY=VALUE")


@pytest.mark.parametrize("adapt, arg, fragment", [
    ("mlp", "lr=nan", "parameter 'lr' must be a finite number > 0, got nan"),
    ("mlp", "lr=inf", "parameter 'lr' must be a finite number > 0, got inf"),
    ("lora", "weight_decay=-1", "parameter 'weight_decay' must be a finite number >= 0, got -1.0"),
    ("full_ft", "eps=-1", "parameter 'eps' must be a finite number > 0, got -1.0"),
])
def test_adapter_numbers_are_checked_before_any_work(tmp_path, adapt, arg, fragment):
    proc = fairbench("run", "--adapt", adapt, "--adapt-arg", arg, "--out", str(tmp_path))
    assert_one_line_error(proc, f"adapter '{adapt}': {fragment}")
    assert not any(tmp_path.iterdir())  # refused when the adapter is built: no model, no cell folder


@pytest.mark.parametrize("args", [["run", "--seed", "99999999999999999999999"], ["run", "--seed", str(2**32)],
                                  ["run", "--seed", "-1"], ["compare", "a", "b", "--seed", "-3"],
                                  ["sweep", "--seeds", "0,4294967296", "--dry-run"],
                                  ["sweep", "--seeds", "0-99999999999999999999", "--dry-run"]])
def test_seed_is_bounded(tmp_path, args):
    proc = fairbench(*args, "--out", str(tmp_path))
    assert_one_line_error(proc, "seed", "from 0 to 4294967295")
    assert not any(tmp_path.iterdir())


def test_sweep_file_seed_is_bounded(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("tasks: [synth_cxr]\nmodels: [tinyclip]\nadapts: [zeroshot]\nseeds: [0, 4294967296]\n")
    proc = fairbench("sweep", str(sweep), "--dry-run", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, f"{sweep}: field 'seeds' is wrong: seed 4294967296", "from 0 to 4294967295")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform != "win32",
                    reason="root ignores directory permissions; covered by the file-in-the-way case")
def test_unwritable_output_directory_permissions(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    proc = fairbench("run", "--out", str(locked))
    assert_one_line_error(proc, "is not writable")


def test_output_path_blocked_by_a_file(tmp_path, tiny_tasks_dir):
    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    proc = fairbench("run", "--task", "synth_tiny", "--tasks-dir", str(tiny_tasks_dir),
                     "--weights", "random", "--out", str(blocker))
    assert_one_line_error(proc, "is not writable", str(blocker))


def test_a_second_writer_of_a_cell_gets_one_line(tmp_path, tiny_tasks_dir):
    from fairbench.locking import cell_lock

    cell = tmp_path / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0"
    with cell_lock(cell):  # as if another `fairbench run` or a sweep worker were computing it
        proc = fairbench("run", "--task", "synth_tiny", "--tasks-dir", str(tiny_tasks_dir), "--weights", "random",
                         "--out", str(tmp_path), "--n-boot", "0")
    assert_one_line_error(proc, f"cell {cell} is being computed by process {os.getpid()}", "wait for it")
    assert not cell.exists()


def test_metrics_refuses_duplicate_sample_ids(tmp_path):
    import pandas as pd
    from fixtures_results import fabricate_cell

    cell = fabricate_cell(tmp_path / "r", n_test=60)
    frame = pd.read_parquet(cell / "predictions.parquet")
    test_rows = frame[frame["split"] == "test"]
    pd.concat([frame, test_rows.iloc[[5]]]).to_parquet(cell / "predictions.parquet", index=False)
    proc = fairbench("metrics", str(cell / "predictions.parquet"))
    assert_one_line_error(proc, "duplicate sample_id(s) in split(s) test", repr(str(test_rows["sample_id"].iloc[5])))


def test_missing_weights_file(tmp_path):
    proc = fairbench("run", "--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "weights file not found", "nope.safetensors")


def test_run_prints_summary_and_resumes(tmp_path, tiny_tasks_dir):
    args = ("run", "--task", "synth_tiny", "--tasks-dir", str(tiny_tasks_dir), "--weights", "pretrain:synth_tiny",
            "--out", str(tmp_path), "--n-boot", "20")
    proc = fairbench(*args, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SYNTHETIC" in out
    for word in ("AUC", "ES-AUC", "DPD", "DEOdds", "sex", "age", "race", "<60", ">=60"):
        assert word in out, word
    cell = tmp_path / "synth_tiny" / "tinyclip" / "zeroshot" / "seed0"
    assert f"results: {cell}" in out.replace("\n", "")
    again = fairbench(*args, env={"COLUMNS": "200"})
    assert again.returncode == 0
    assert "already complete, skipped" in again.stderr


# -- honest output (issue #14, items 12 and 14) ----------------------------------------------------------------------
def _summary_text(doc: dict, cell) -> str:
    from rich.console import Console

    from fairbench.report.summary import print_summary

    console = Console(record=True, width=400, highlight=False, file=open(os.devnull, "w"))
    print_summary(doc, cell, console)
    return console.export_text()


def _cell_doc(tmp_path, **kw) -> tuple[dict, object]:
    import json

    from fixtures_results import fabricate_cell

    cell = fabricate_cell(tmp_path, **kw)
    return json.loads((cell / "metrics.json").read_text()), cell


def test_summary_says_when_weights_are_random(tmp_path):
    doc, cell = _cell_doc(tmp_path)
    assert "RANDOM WEIGHTS" in _summary_text(doc, cell)
    doc["model"]["weights"] = {"source": "pretrain:synth_cxr", "sha256": "ab" * 32}
    assert "RANDOM" not in _summary_text(doc, cell)


def test_summary_counts_skipped_samples_and_points_at_the_list(tmp_path):
    doc, cell = _cell_doc(tmp_path)
    assert "unreadable" not in _summary_text(doc, cell)
    doc["data"] = {"allow_skip_unreadable": True, "n_skipped": 3,
                   "skipped": [{"split": "test", "sample_id": f"s{i}", "reason": "missing"} for i in range(3)]}
    text = _summary_text(doc, cell)
    assert "3 sample(s) skipped as unreadable" in text
    assert f"{cell / 'metrics.json'} under data.skipped" in text


def test_summary_without_bootstrap_does_not_announce_intervals(tmp_path):
    doc, cell = _cell_doc(tmp_path, n_boot=0)
    text = _summary_text(doc, cell)
    assert "B=0" not in text and "bootstrap CI" not in text
    assert "no confidence intervals" in text
    doc, cell = _cell_doc(tmp_path / "boot", n_boot=20)
    assert "[95% bootstrap CI, B=20]" in _summary_text(doc, cell)


def test_summary_shows_intervals_of_multiclass_one_vs_rest_gaps(tmp_path):
    doc, cell = _cell_doc(tmp_path, task="chexpert5", n_boot=20)
    sex = doc["metrics"]["attributes"]["sex"]
    assert sex.get("dpd") is None and sex["dpd_mean_ovr"] is not None  # multiclass: only the OvR mean
    text = _summary_text(doc, cell)
    for key in ("dpd_mean_ovr", "deodds_mean_ovr"):
        lo, hi = doc["metrics"]["ci"]["attributes"]["sex"][key]
        assert f"{100 * lo:.1f}–{100 * hi:.1f}" in text, key


def test_piped_output_never_splits_names_or_paths(tmp_path):
    """Where stdout is not a terminal (here a pipe, without COLUMNS), nothing is wrapped at 80 columns: class
    names and weight paths stay whole, one table row per line."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "fairbench", "ls", "tasks"], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "chexpert5" in ln)
    assert "Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion" in row
    proc = subprocess.run([sys.executable, "-m", "fairbench", "ls", "models"], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    row = next(ln for ln in proc.stdout.splitlines() if "biomedclip" in ln)
    assert "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in row


# -- --help and switches (issue #14 item 15) -------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "sweep", "ls", "leaderboard", "check", "plot", "data check"])
def test_help_shows_switches_as_switches_and_types_in_words(command):
    proc = fairbench(*command.split(), "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for python_type in ("<bool>", "<str>", "<int", "<path>", "list["):
        assert python_type not in proc.stdout, (command, python_type, proc.stdout)
    switch = {"run": "--overwrite", "sweep": "--dry-run", "ls": "--help", "leaderboard": "--include-reported-only",
              "check": "--update", "plot": "--help", "data check": "--quick"}[command]
    line = next(ln for ln in proc.stdout.splitlines() if f"{switch} " in ln)
    assert "BOOLEAN" not in line, line
    if command in ("run", "sweep", "plot"):
        assert any("--tasks-dir" in ln and "PATH" in ln for ln in proc.stdout.splitlines())


def test_a_value_after_a_switch_is_a_one_line_error(tmp_path):
    proc = fairbench("run", "--overwrite", "true", "--out", str(tmp_path))
    assert_one_line_error(proc, "--overwrite is an on/off switch and takes no value (got 'true')")
    proc = fairbench("sweep", "--dry-run", "--allow-skip-unreadable=yes", "--out", str(tmp_path))
    assert_one_line_error(proc, "--allow-skip-unreadable is an on/off switch",
                          "--allow-skip-unreadable or --no-allow-skip-unreadable")


def test_sweep_switches_can_be_turned_off(tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"tasks: [synth_cxr]\nmodels: [tinyclip]\nadapts: [zeroshot]\nout: {tmp_path / 'out'}\n"
                          "overwrite: true\n")
    from fairbench.sweep.command import build_spec

    spec = build_spec(sweep_file, tasks=None, models=None, adapts=None, seeds=None, executor=None, workers=None,
                      executor_args={}, threads=None, tasks_dirs=None, adapt_args=None,
                      options={"overwrite": False})
    assert spec.options["overwrite"] is False  # what --no-overwrite passes overrides the file
    proc = fairbench("sweep", str(sweep_file), "--dry-run", "--no-overwrite")
    assert proc.returncode == 0, proc.stderr


def test_piped_help_keeps_option_names_and_sentences_whole():
    """issue 21 item 15: `fairbench sweep --help | cat` (no $COLUMNS) cut option names with an ellipsis and broke
    help texts mid-sentence at 80 columns."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "fairbench", "sweep", "--help"], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "--allow-skip-unreadable" in proc.stdout and "--no-allow-skip-unreadable" in proc.stdout
    lines = proc.stdout.splitlines()
    for sentence in ("Weights source overriding the card's: a file, local-dir:PATH, hf-hub:ORG/REPO, or random.",
                     "Run a grid of cells (tasks x models x adapters x seeds); complete cells are skipped."):
        assert any(sentence in ln for ln in lines), sentence


def test_readme_gives_a_cpu_only_install_before_pip_install():
    """issue 21 item 7: `pip install .` pulls CUDA torch though the README says CPU is fine. The quick start must
    install torch from torch's CPU wheel index before installing fairbench (in that order, so pip keeps it)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("## What the default run shows")]
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in quick
    assert quick.index(cpu) < quick.index("pip install . && fairbench run", quick.index(cpu))


def test_run_sweep_and_embed_share_one_declaration_per_option():
    """Options that several commands take are declared once (fairbench/options.py): the same flag, help text and
    panel on every command, so a fix to one cannot leave the other behind."""
    import typer.main

    from fairbench.cli import app

    commands = typer.main.get_command(app).commands
    def params(name: str) -> dict[str, tuple]:
        return {p.name: (tuple(p.opts), p.help, getattr(p, "rich_help_panel", None))
                for p in commands[name].params}
    run, sweep, embed = params("run"), params("sweep"), params("embed")
    shared = ("out", "data_root", "weights", "device", "n_boot", "tasks_dir", "adapt_arg", "model_arg",
              "image_cache", "precision")
    for name in shared:
        assert run[name] == sweep[name], name
    for name in ("weights", "model_arg", "data_root", "tasks_dir", "device", "allow_download", "embedding_cache"):
        assert run[name] == embed[name], name
    # the two switches a sweep can turn off: same help text up to the sweep's default note
    for name in ("overwrite", "allow_skip_unreadable"):
        assert run[name][1].rstrip(".") in sweep[name][1], name


def test_one_key_value_parser():
    """Every KEY=VALUE option splits in fairbench.kv (the same one-line error for the same mistake)."""
    import ast
    from pathlib import Path

    import fairbench

    root = Path(fairbench.__file__).parent
    splitters = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if 'partition("=")' in p.read_text() and p.name != "cli.py")  # cli.py: --flag=value words
    assert splitters == ["kv.py"], splitters
    assert ast.parse((root / "kv.py").read_text())


def test_leakage_train_max_below_two_is_a_one_line_error(tmp_path):
    proc = fairbench("leakage", "--model", "tinyclip", "--task", "synth_cxr", "--train-max", "1",
                     "--out", str(tmp_path / "leak.json"))
    assert_one_line_error(proc, "--train-max must be >= 2, got 1")
    assert not (tmp_path / "leak.json").exists()
