"""`fairbench check` on fabricated cells: passing, regressions and improvements in both directions (two-sided
and one-sided),
tolerances, missing/new/unreadable cells, changed data, and a deterministic baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures_results import fabricate_cell
from typer.testing import CliRunner

from fairbench.cli import app
from fairbench.errors import FairbenchError
from fairbench.report.check import parse_tolerances

CELL = Path("synth_cxr") / "m" / "zeroshot" / "seed0" / "metrics.json"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "results"
    for seed in (0, 1):
        fabricate_cell(root, model="m", adapt="zeroshot", seed=seed, strength=0.8, bias=0.5)
    return root


@pytest.fixture
def setup(pristine, tmp_path) -> tuple[Path, Path]:
    """A copy of the results and a baseline written from them."""
    root = tmp_path / "results"
    shutil.copytree(pristine, root)
    baseline = tmp_path / "baseline.json"
    res = check(root, "--baseline", str(baseline), "--update")
    assert res.exit_code == 0 and "wrote baseline" in res.output, res.output
    return root, baseline


def check(*args) -> object:
    return CliRunner().invoke(app, ["check", *map(str, args)], env={"COLUMNS": "200"})


def edit(root: Path, fn) -> None:
    path = root / CELL
    doc = json.loads(path.read_text())
    fn(doc["metrics"], doc)
    path.write_text(json.dumps(doc))


def test_unchanged_results_pass_and_the_baseline_is_deterministic(setup, tmp_path):
    root, baseline = setup
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 0 and "passed" in res.output and "0 failing" in res.output
    again = tmp_path / "again.json"
    check(root, "--baseline", again, "--update")
    assert again.read_bytes() == baseline.read_bytes()
    doc = json.loads(baseline.read_text())
    assert sorted(doc["cells"]) == ["synth_cxr/m/zeroshot/seed0", "synth_cxr/m/zeroshot/seed1"]
    nums = doc["cells"]["synth_cxr/m/zeroshot/seed0"]["metrics"]
    for key in ("overall.auc", "overall.n", "attributes.age.es_auc", "attributes.age.auc_gap",
                "attributes.age.dpd", "attributes.age.deodds", "attributes.age.groups.>=60.auc",
                "attributes.sex*age.groups.F*<60.n", "overall.f1_per_class.abnormal"):
        assert key in nums, key
    assert doc["tolerances"] == {"default": 0.01}


@pytest.mark.parametrize("metric, delta, verdict", [
    (("overall", "auc"), -0.05, "regression"),  # utility falls
    (("attributes", "age", "auc_gap"), +0.05, "regression"),  # a fairness gap grows
    (("attributes", "sex", "es_auc"), -0.05, "regression"),  # equity-scaled AUC falls
    (("attributes", "race", "dpd"), +0.05, "regression"),
    (("overall", "ece"), +0.05, "regression"),  # calibration error grows
    (("overall", "auc"), +0.05, "improvement"),
    (("attributes", "age", "auc_gap"), -0.05, "improvement"),  # a gap shrinks
    (("attributes", "race", "deodds"), -0.05, "improvement"),
])
def test_direction_aware_verdicts(setup, metric, delta, verdict):
    root, baseline = setup

    def move(m, doc):
        node = m
        for k in metric[:-1]:
            node = node[k]
        node[metric[-1]] += delta

    edit(root, move)
    path = ".".join(metric)
    # one-sided: only a move the bad way fails; an improvement is listed and passes
    res = check(root, "--baseline", baseline, "--one-sided")
    line = next(ln for ln in res.output.splitlines() if path in ln)
    assert verdict in line and "two-sided" not in line and f"{delta:+.4f}" in line, res.output
    assert res.exit_code == (1 if verdict == "regression" else 0), res.output
    assert ("FAILED" in res.output) == (verdict == "regression")
    # two-sided (the default, and what .ci/run runs): a regression test of numbers fails on either move
    for args in ((), ("--two-sided",)):
        res = check(root, "--baseline", baseline, *args)
        line = next(ln for ln in res.output.splitlines() if path in ln)
        assert verdict in line and f"{delta:+.4f}" in line, res.output
        assert ("(two-sided)" in line) == (verdict == "improvement"), line
        assert res.exit_code == 1 and "FAILED" in res.output, res.output


def test_two_sided_fails_on_a_null_that_became_a_number(setup):
    root, baseline = setup
    edit(root, lambda m, d: m["attributes"]["age"].update(es_auc=None))
    check(root, "--baseline", baseline, "--update")
    edit(root, lambda m, d: m["attributes"]["age"].update(es_auc=0.6))
    res = check(root, "--baseline", baseline, "--one-sided")
    assert res.exit_code == 0 and "newly defined" in res.output, res.output
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 1 and "newly defined (two-sided)" in res.output, res.output


def test_the_ci_check_is_two_sided():
    """.ci/run checks the committed baseline two-sided (its numbers must not move either way)."""
    lines = [ln for ln in (Path(__file__).parents[1] / ".ci" / "run").read_text().splitlines()
             if "fairbench check" in ln and not ln.lstrip().startswith("#")]
    assert lines and all("--two-sided" in ln and "--one-sided" not in ln for ln in lines), lines


def test_moves_within_tolerance_pass_and_tolerances_apply_per_metric(setup):
    root, baseline = setup
    edit(root, lambda m, d: m["overall"].update(auc=m["overall"]["auc"] - 0.004))
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 0 and "largest move 0.004" in res.output
    assert check(root, "--baseline", baseline, "--tolerance", "auc=0.001").exit_code == 1
    edit(root, lambda m, d: m["overall"].update(auc=m["overall"]["auc"] - 0.03))
    assert check(root, "--baseline", baseline).exit_code == 1
    assert check(root, "--baseline", baseline, "--tolerance", "auc=0.05").exit_code == 0
    assert check(root, "--baseline", baseline, "--tolerance", "0.05").exit_code == 0  # the default


def test_counts_undefined_values_and_changed_data_fail(setup):
    root, baseline = setup
    edit(root, lambda m, d: m["attributes"]["age"].update(es_auc=None))
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 1 and "undefined" in res.output
    edit(root, lambda m, d: (m["attributes"]["age"].update(es_auc=0.5), m["overall"].update(n=399),
                             d["task"].update(samples_sha256="f" * 64)))
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 1 and "data changed" in res.output and "changed" in res.output
    assert "overall.n" in res.output and "-1" in res.output


def test_missing_new_and_unreadable_cells(setup):
    root, baseline = setup
    extra = fabricate_cell(root, model="other", adapt="zeroshot", seed=0)
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 0 and "new cell" in res.output and "add them with --update" in res.output
    shutil.rmtree(extra)
    shutil.rmtree((root / CELL).parent.parent / "seed1")
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 1 and "missing cell" in res.output and "synth_cxr/m/zeroshot/seed1" in res.output
    (root / CELL).write_text("{oops")
    res = check(root, "--baseline", baseline)
    assert res.exit_code == 1 and "unreadable: malformed metrics.json" in res.output
    # and a baseline is never written from unreadable results
    res = check(root, "--baseline", baseline, "--update")
    assert res.exit_code != 0 and "refusing to write a baseline" in str(res.exception)


def test_bad_arguments(setup, tmp_path):
    root, _ = setup
    with pytest.raises(FairbenchError, match="expected a number"):
        parse_tolerances(["auc=lots"])
    with pytest.raises(FairbenchError, match="non-negative"):
        parse_tolerances(["-1"])
    res = check(root, "--baseline", tmp_path / "nope.json")
    assert res.exit_code != 0 and "no such baseline" in str(res.exception)
