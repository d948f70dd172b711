"""FairMedFM variants (fairbench/analyses/fairmedfm.py) against the ``fairmedfm`` package 0.4.x to 1e-12.

The reference is ``fairmedfm.evaluate`` (PyPI 0.4.2, the FairMedFM authors' package), run on the same rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairbench.analyses import compute_variants
from fairbench.analyses.fairmedfm import NAMES, fairmedfm_variants
from fairbench.errors import DataError

fairmedfm = pytest.importorskip("fairmedfm")


def _reference(prob: np.ndarray, label: np.ndarray, groups: dict[str, np.ndarray]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = fairmedfm.evaluate(label.astype(int), prob, pd.DataFrame(groups), score_type="probability")
    return rep.summary


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.float64)
    prob = 1 / (1 + np.exp(-(1.2 * label - 0.6 + rng.normal(size=n))))
    prob[:5] = np.round(prob[:5], 1)  # a few ties
    sex = rng.choice(["F", "M"], n).astype(object)
    race = rng.choice(["A", "B", "C", "D"], n).astype(object)
    race[race == "D"] = np.where(label[race == "D"] == 1, "C", "D")  # group D: negatives only -> skipped
    sex[:7] = None  # unknown attribute values
    return prob, label, {"sex": sex, "race": race}


@pytest.mark.parametrize(("seed", "n"), [(0, 300), (1, 1000), (2, 120)])
def test_matches_fairmedfm_package(seed: int, n: int) -> None:
    prob, label, groups = _data(seed, n)
    ours = fairmedfm_variants(prob, label, groups)
    ref = _reference(prob, label, groups)
    for attr in groups:
        row = ref.loc[attr]
        assert ours[attr]["n"] == row["n"] and ours[attr]["n_groups"] == row["n_groups"]
        for name in NAMES:
            assert ours[attr][name] == pytest.approx(float(row[name]), abs=1e-12, rel=0), (attr, name)
    assert ours["race"]["skipped"] == {"D": "only label 0"}


def test_compute_variants_reads_the_evaluated_split() -> None:
    prob, label, groups = _data(3, 400)
    frame = pd.DataFrame({"split": np.where(np.arange(400) < 300, "test", "val"), "label": label.astype(int),
                          "prob_no": 1 - prob, "prob_yes": prob,
                          "attr_sex": pd.array(groups["sex"], dtype="string"),
                          "attr_race": pd.array(groups["race"], dtype="string")})
    out = compute_variants(frame, classes=["no", "yes"], attributes=["sex", "race"], intersections=[["sex", "race"]],
                           eval_split="test", variants=["fairmedfm"])
    test = slice(0, 300)
    inter = np.array([None if s is None else f"{s}*{r}" for s, r in zip(groups["sex"][test], groups["race"][test])],
                     dtype=object)
    ref = _reference(prob[test], label[test], {"sex": groups["sex"][test], "sex*race": inter})
    assert out["fairmedfm"]["sex"]["auc-gap"] == pytest.approx(float(ref.loc["sex", "auc-gap"]), abs=1e-12)
    assert out["fairmedfm"]["sex*race"]["eod"] == pytest.approx(float(ref.loc["sex*race", "eod"]), abs=1e-12)
    assert "test labels" in out["notes"]["fairmedfm"] or "evaluated samples" in out["notes"]["fairmedfm"]
    with pytest.raises(DataError, match="unknown"):
        compute_variants(frame, classes=["no", "yes"], attributes=["sex"], intersections=[], eval_split="test",
                         variants=["medfair"])


# -- at run time: `fairbench run --variants`, sweeps' `variants:` ----------------------------------------------
def _metrics_variants(cell, tasks, tmp_path, name: str) -> dict:
    """What `fairbench metrics PRED --variants fairmedfm` writes for the cell's predictions."""
    import json

    from typer.testing import CliRunner

    from fairbench.cli import app

    out = tmp_path / f"{name}.json"
    res = CliRunner().invoke(app, ["metrics", str(cell / "predictions.parquet"), "--variants", "fairmedfm",
                                   "--out", str(out), "--tasks-dir", str(tasks)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())["variants"]


@pytest.fixture(scope="module")
def fmfm_tasks(micro_task_dir, one_torch_thread):
    return micro_task_dir("synth_fmfm", n=(40, 24, 120))


def _run(tasks, out, *extra: str):
    from typer.testing import CliRunner

    from fairbench.cli import app

    res = CliRunner().invoke(app, ["run", "--task", "synth_fmfm", "--tasks-dir", str(tasks), "--model", "tinyclip",
                                   "--weights", "random", "--device", "cpu", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return res


def test_run_writes_the_variants_that_fairbench_metrics_writes(fmfm_tasks, tmp_path):
    import json

    out = tmp_path / "results"
    _run(fmfm_tasks, out, "--variants", "fairmedfm", "--seed", "1")
    cell = out / "synth_fmfm" / "tinyclip" / "zeroshot" / "seed1"
    doc = json.loads((cell / "metrics.json").read_text())
    assert doc["variants"] == _metrics_variants(cell, fmfm_tasks, tmp_path, "seed1")
    # and against the FairMedFM package itself on the evaluated rows of the predictions
    frame = pd.read_parquet(cell / "predictions.parquet")
    ev = frame[frame["split"] == "test"]
    groups = {"sex": ev["attr_sex"].astype(object).to_numpy()}
    ref = _reference(ev["prob_abnormal"].to_numpy(), ev["label"].to_numpy().astype(np.float64), groups)
    for name in NAMES:
        assert doc["variants"]["fairmedfm"]["sex"][name] == pytest.approx(float(ref.loc["sex", name]), abs=1e-12)

    # a complete cell computed without them gets them added from its predictions; nothing else changes
    _run(fmfm_tasks, out, "--seed", "2")
    cell2 = out / "synth_fmfm" / "tinyclip" / "zeroshot" / "seed2"
    before = json.loads((cell2 / "metrics.json").read_text())
    assert "variants" not in before
    pred_stamp = (cell2 / "predictions.parquet").stat().st_mtime_ns
    res = _run(fmfm_tasks, out, "--seed", "2", "--variants", "fairmedfm")
    after = json.loads((cell2 / "metrics.json").read_text())
    assert after["variants"] == _metrics_variants(cell2, fmfm_tasks, tmp_path, "seed2")
    assert {k: v for k, v in after.items() if k != "variants"} == before
    assert (cell2 / "predictions.parquet").stat().st_mtime_ns == pred_stamp
    assert "already complete" in res.output


def test_sweep_file_variants_reach_every_cell(fmfm_tasks, tmp_path):
    import json

    from fairbench.sweep import load_sweep_file, plan, run_sweep

    out = tmp_path / "results"
    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text(f"tasks: [synth_fmfm]\nmodels: [tinyclip]\nadapts: [zeroshot]\nseeds: 0\nweights: random\n"
                     f"device: cpu\nout: {out}\ntasks_dir: {fmfm_tasks}\nworkers: 0\nthreads: 1\n")
    spec = load_sweep_file(sweep)
    assert run_sweep(spec).ok
    cell = out / "synth_fmfm" / "tinyclip" / "zeroshot" / "seed0"
    before = json.loads((cell / "metrics.json").read_text())
    assert "variants" not in before
    # the same sweep asking for the variants: the complete cell is not skipped, it gets them
    sweep.write_text(sweep.read_text() + "variants: fairmedfm\n")
    spec = load_sweep_file(sweep)
    assert spec.options["variants"] == ["fairmedfm"]
    done, todo = plan(spec)
    assert not done and [c.key for c in todo] == ["synth_fmfm/tinyclip/zeroshot/seed0"]
    assert run_sweep(spec).ok
    after = json.loads((cell / "metrics.json").read_text())
    assert after["variants"] == _metrics_variants(cell, fmfm_tasks, tmp_path, "sweep")
    assert {k: v for k, v in after.items() if k != "variants"} == before
    assert plan(spec)[0] and not plan(spec)[1]  # now complete with them


def test_variants_are_checked_before_anything_runs(tmp_path):
    from fairbench.errors import FairbenchError
    from fairbench.sweep import load_sweep_file

    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text(f"tasks: [nih6x200]\nmodels: [tinyclip]\nadapts: [zeroshot]\nout: {tmp_path}\n"
                     "variants: [fairmedfm]\n")
    with pytest.raises(FairbenchError, match="binary tasks only; task 'nih6x200'"):
        load_sweep_file(sweep).validate()
    sweep.write_text(sweep.read_text().replace("nih6x200", "synth_cxr").replace("[fairmedfm]", "[medfair]"))
    with pytest.raises(FairbenchError, match="unknown 'medfair'; known: fairmedfm"):
        load_sweep_file(sweep).validate()
