"""The analyses (issue 19) in `fairbench plot` and `fairbench report`: one real zero-shot cell of tinyclip on a
micro synth_cxr with ``templates=all`` (so it records all five analyses), beside a cell without analyses (an
older result). What the figures draw is checked against numbers computed here from predictions.parquet with
pandas and scikit-learn, not by the code under test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_results import fabricate_cell
from matplotlib.container import ErrorbarContainer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from test_cli import fairbench

from fairbench.report.collect import collect
from fairbench.report.plots_analyses import (
    calibration_figure,
    leakage_figure,
    power_figure,
    prompts_figure,
    underdiagnosis_figure,
)
from fairbench.results import write_json

NAMES = ("underdiagnosis", "calibration", "leakage", "power", "prompts")
ATTRS = ("sex", "age", "race", "sex*age")


@pytest.fixture(scope="module")
def results(micro_task_dir, tmp_path_factory) -> Path:
    import torch

    from fairbench.pipeline import RunConfig, run_cell

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tasks = micro_task_dir("viz_cell", (60, 40, 120))
        root = tmp_path_factory.mktemp("analyses") / "results"
        run_cell(RunConfig(task="viz_cell", model="tinyclip", adapt="zeroshot", out=root, tasks_dirs=(tasks,),
                           device="cpu", n_boot=50, adapt_args={"templates": "all"}))
    finally:
        torch.set_num_threads(before)
    old = fabricate_cell(root, model="older", adapt="linear_probe", n_boot=0)  # a result from before the analyses
    doc = json.loads((old / "metrics.json").read_text())
    del doc["analyses"]
    write_json(old / "metrics.json", doc)
    return root


@pytest.fixture(scope="module")
def cell(results):
    (c,) = [c for c in collect([results]).cells if c.task == "viz_cell"]
    assert set(c.doc["analyses"]) == set(NAMES)
    return c


@pytest.fixture(scope="module")
def test_rows(cell) -> pd.DataFrame:
    frame = pd.read_parquet(cell.predictions)
    frame = frame[frame["split"] == "test"].reset_index(drop=True)
    frame["attr_sex*age"] = frame["attr_sex"] + "*" + frame["attr_age"]
    return frame


def _panels(fig) -> dict[str, object]:
    """Axes by the first line of their title (the attribute)."""
    return {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_title()}


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- fairbench plot ----------------------------------------------------------------------------------------------
def test_plot_draws_each_recorded_analysis_and_skips_older_cells(results, tmp_path):
    out = tmp_path / "figs"
    proc = fairbench("plot", str(results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "skipped" not in proc.stderr, proc.stderr
    base = out / "viz_cell" / "tinyclip" / "zeroshot" / "seed0"
    for name in NAMES:
        for fmt in ("png", "svg"):
            path = base / f"analysis_{name}.{fmt}"
            assert path.is_file() and path.stat().st_size > 5000, path
    svgs = {n: (base / f"analysis_{n}.svg").read_text() for n in NAMES}
    for name, texts in {"underdiagnosis": ("Seyyed-Kalantari", "underdiagnosis rate (x100)", "sex*age", "n="),
                        "calibration": ("Reliability per group", "slope", "intercept", "ECE"),
                        "leakage": ("probe AUC on the test split (x100)", "chance (50)"),
                        "power": ("MDE", "80% power", "DEOdds"),
                        "prompts": ("ensemble (the cell's predictions)", "AUC gap, best − worst group (x100)")}.items():
        for text in texts:
            assert text in svgs[name], (name, text)
    older = out / "synth_cxr" / "older" / "linear_probe" / "seed0"
    assert (older / "age.png").is_file() and not list(older.glob("analysis_*"))


def test_underdiagnosis_bars_are_the_share_of_findings_called_normal(cell, test_rows):
    threshold = cell.doc["threshold"]["value"]
    assert cell.metrics["classes"] == ["normal", "abnormal"]
    finding = test_rows[test_rows["label"] == 1]
    called_normal = finding["prob_abnormal"] < threshold  # the suite predicts abnormal at prob >= threshold
    fig = underdiagnosis_figure(cell)
    panels = _panels(fig)
    assert list(panels) == list(ATTRS)
    rec = cell.doc["analyses"]["underdiagnosis"]
    checked = 0
    for attr, ax in panels.items():
        groups = list(rec[attr]["groups"])
        expected = called_normal.groupby(finding[f"attr_{attr}"]).mean()
        heights = [p.get_height() for p in ax.patches]
        assert heights == pytest.approx([100 * expected[g] for g in groups], abs=1e-9), attr
        # the error bars are the recorded 95% intervals
        (container,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        segments = container.lines[2][0].get_segments()
        for g, seg in zip(groups, segments, strict=True):
            lo, hi = rec[attr]["groups"][g]["ci"]
            assert [seg[0][1], seg[1][1]] == pytest.approx([100 * lo, 100 * hi], abs=1e-9), (attr, g)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [f"{g}\nn={int((finding[f'attr_{attr}'] == g).sum())}" for g in groups]
        checked += len(groups)
    assert checked == 2 + 2 + 3 + 4
    _close(fig)


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def test_reliability_curves_are_the_binned_predictions_with_ece_slope_and_intercept(cell, test_rows):
    fig = calibration_figure(cell, test_rows.drop(columns="attr_sex*age"))
    panels = _panels(fig)
    assert list(panels) == list(ATTRS)
    edges = np.linspace(0, 1, 16)
    checked = 0
    for attr, ax in panels.items():
        lines = {ln.get_label().split(" (n=")[0]: ln for ln in ax.get_lines() if " (n=" in ln.get_label()}
        assert set(lines) == set(test_rows[f"attr_{attr}"].unique())
        for g, line in lines.items():
            rows = test_rows[test_rows[f"attr_{attr}"] == g]
            p, y = rows["prob_abnormal"], (rows["label"] == 1).astype(float)
            bins = pd.cut(p, edges, include_lowest=True)
            stats = pd.DataFrame({"p": p, "y": y, "bin": bins}).groupby("bin", observed=True).agg(
                conf=("p", "mean"), freq=("y", "mean"), n=("p", "size"), sp=("p", "sum"), sy=("y", "sum"))
            shown = stats[stats["n"] >= 5]
            assert line.get_xdata() == pytest.approx(100 * shown["conf"].to_numpy(), abs=1e-9), (attr, g)
            assert line.get_ydata() == pytest.approx(100 * shown["freq"].to_numpy(), abs=1e-9), (attr, g)
            ece = (stats["sy"] - stats["sp"]).abs().sum() / len(rows)
            label = line.get_label()
            assert f"n={len(rows)}, ECE {100 * ece:.1f}" in label, (label, ece)
            # the slope: an unpenalised logistic regression of the label on logit(p), by scikit-learn
            slope = LogisticRegression(C=1e12, tol=1e-10, max_iter=10000).fit(
                _logit(p.to_numpy())[:, None], y).coef_[0, 0]
            shown_slope = re.search(r"slope (-?[\d.]+|n/a)", label).group(1)
            if shown_slope != "n/a":
                assert float(shown_slope) == pytest.approx(slope, abs=0.006), (attr, g, label)
                checked += 1
    assert checked >= 8
    _close(fig)


def test_leakage_chart_draws_each_recorded_auc_and_interval_against_chance(cell):
    leak = cell.doc["analyses"]["leakage"]
    fig = leakage_figure(cell)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(leak)
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == len(leak)
    for (attr, r), c in zip(leak.items(), points, strict=True):
        x, _ = c.lines[0].get_data()
        assert x[0] == pytest.approx(100 * r["auc"], abs=1e-9)
        seg = c.lines[2][0].get_segments()[0]
        assert [seg[0][0], seg[1][0]] == pytest.approx([100 * r["ci"][0], 100 * r["ci"][1]], abs=1e-9), attr
    assert any(ln.get_xdata()[0] == 50 for ln in ax.get_lines() if ln.get_label().startswith("chance"))
    _close(fig)


def test_power_chart_puts_the_mde_beside_the_observed_auc_gap(cell, test_rows):
    power = cell.doc["analyses"]["power"]
    fig = power_figure(cell)
    ax = fig.axes[0]
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    spans = list(ax.patches)
    assert len(points) == len(spans) == len(ATTRS)
    for attr, point, span in zip(ATTRS, points, spans, strict=True):
        rows = test_rows.dropna(subset=[f"attr_{attr}"])
        aucs = [roc_auc_score(g["label"], g["prob_abnormal"]) for _, g in rows.groupby(f"attr_{attr}")
                if g["label"].nunique() == 2]
        x, _ = point.lines[0].get_data()
        assert x[0] == pytest.approx(100 * (max(aucs) - min(aucs)), abs=1e-9), attr
        r = power[attr]
        expected = 100 * r["mde_auc_gap"] if r["mde_auc_gap"] is not None else 100 * (r["ref_auc"] - 0.5)
        assert span.get_width() == pytest.approx(expected, abs=1e-9), attr
        assert (span.get_hatch() is not None) == (r["mde_auc_gap"] is None)
    _close(fig)


def test_prompt_chart_ends_with_the_cells_own_auc(cell, test_rows):
    prompts = cell.doc["analyses"]["prompts"]
    fig = prompts_figure(prompts)
    ax_auc, ax_gap = fig.axes
    widths = [p.get_width() for p in ax_auc.patches]
    assert widths[-1] == pytest.approx(100 * roc_auc_score(test_rows["label"], test_rows["prob_abnormal"]), abs=1e-9)
    assert widths == pytest.approx([100 * r["auc"] for r in prompts["templates"]], abs=1e-9)
    assert ax_auc.patches[-1].get_hatch() == "//"
    n = len(prompts["templates"])
    sex = [p.get_width() for p in ax_gap.patches[:n]]  # the first attribute's bars
    assert sex == pytest.approx([100 * r["gaps"]["sex"]["gap"] for r in prompts["templates"]], abs=1e-9)
    _close(fig)


# -- fairbench report --------------------------------------------------------------------------------------------
def _tables(html: str) -> dict[str, list[list[str]]]:
    from test_report_html import Page

    p = Page()
    p.feed(html)
    return p.tables


def test_report_has_a_section_per_analysis_with_its_numbers(results, cell, test_rows, tmp_path):
    from fairbench.report.html import write_site

    report = write_site([results], tmp_path / "site")
    assert not report.problems
    page = tmp_path / "site" / "cells" / "viz_cell" / "tinyclip" / "zeroshot" / "seed0" / "index.html"
    html = page.read_text()
    for name in NAMES:
        section = html[html.index(f'id="analysis-{name}"'):]
        section = section[:section.index("</section>")]
        assert '<svg role="img" aria-label="viz_cell/tinyclip/zeroshot/seed0: ' in section, name  # its figure
        assert "<table" in section, name
    tables = _tables(html)
    an = cell.doc["analyses"]

    # underdiagnosis: the rate per group from the predictions, beside its recorded interval
    finding = test_rows[test_rows["label"] == 1]
    rate = (finding["prob_abnormal"] < cell.doc["threshold"]["value"]).groupby(finding["attr_race"]).mean()
    rows = {r[0].split(" (")[0]: r for r in tables["underdiagnosis-race"][1:]}
    for g, v in an["underdiagnosis"]["race"]["groups"].items():
        lo, hi = v["ci"]
        assert rows[g][2].startswith(f"{100 * rate[g]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"), rows[g]
        assert rows[g][1] == str(int((finding["attr_race"] == g).sum()))

    # calibration: ECE per group as recorded, slope and intercept with their Wald intervals
    rows = {r[0]: r for r in tables["calibration-sex"][1:]}
    for g, fit in an["calibration"]["sex"]["groups"].items():
        assert rows[g][3] == f"{fit['slope']:.2f} [{fit['slope_ci'][0]:.2f}, {fit['slope_ci'][1]:.2f}]"
        assert rows[g][4] == (f"{fit['intercept']:.2f} [{fit['intercept_ci'][0]:.2f}, "
                              f"{fit['intercept_ci'][1]:.2f}]")
        assert rows[g][2].startswith(f"{100 * cell.metrics['attributes']['sex']['groups'][g]['ece']:.1f} [")

    # leakage: AUC with interval and chance
    rows = {r[0]: r for r in tables["leakage"][1:]}
    for a, r in an["leakage"].items():
        assert rows[a][1] == f"{100 * r['auc']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
        assert rows[a][2] == "50.0" and rows[a][3] == ("yes" if r["ci"][0] > 0.5 else "no")

    # power: the observed gap from the predictions, and the underpowered note where it applies
    rows = {r[0]: r for r in tables["power"][1:]}
    for a in ATTRS:
        sub = test_rows.dropna(subset=[f"attr_{a}"])
        aucs = [roc_auc_score(g["label"], g["prob_abnormal"]) for _, g in sub.groupby(f"attr_{a}")
                if g["label"].nunique() == 2]
        assert rows[a][3].startswith(f"{100 * (max(aucs) - min(aucs)):.1f} ["), rows[a]
        r = an["power"][a]
        ci = r["observed_gap_ci"]
        if ci[0] <= 0 <= ci[1]:
            assert rows[a][4].startswith("underpowered"), rows[a]
            assert f"{a}: AUC gap" in html
        mde = r["mde_auc_gap"]
        assert rows[a][2] == ("none above chance" if mde is None else f"{100 * mde:.1f}")

    # prompts: spread min/max/SD over the single prompt sets, and whether the same group is worst under each
    singles = [r for r in an["prompts"]["templates"] if r["kind"] != "ensemble"]
    rows = {r[0]: r for r in tables["prompts-spread"][1:]}
    aucs = [r["auc"] for r in singles]
    assert rows["AUC"][1:4] == [f"{100 * min(aucs):.1f}", f"{100 * max(aucs):.1f}",
                                f"{100 * np.std(aucs, ddof=1):.1f}"]
    for a in ("sex", "age", "race"):
        gaps = [r["gaps"][a]["gap"] for r in singles]
        worst = {r["gaps"][a]["worst"] for r in singles}
        assert rows[f"AUC gap, {a}"][1:4] == [f"{100 * min(gaps):.1f}", f"{100 * max(gaps):.1f}",
                                              f"{100 * np.std(gaps, ddof=1):.1f}"]
        assert rows[f"AUC gap, {a}"][5] == ("yes" if len(worst) == 1 else "no")
    assert len(tables["prompts"]) == 1 + len(an["prompts"]["templates"])

    older = tmp_path / "site" / "cells" / "synth_cxr" / "older" / "linear_probe" / "seed0" / "index.html"
    assert "analysis-" not in older.read_text()


def test_an_unreadable_analysis_record_is_reported_not_fatal(tmp_path):
    from typer.testing import CliRunner

    from fairbench.cli import app
    from fairbench.report.html import write_site

    cell = fabricate_cell(tmp_path / "results", model="edited", n_boot=0)
    doc = json.loads((cell / "metrics.json").read_text())
    doc["analyses"]["underdiagnosis"]["age"]["groups"]["<60"] = 5  # an edited file: a number, not a record
    write_json(cell / "metrics.json", doc)
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "results"), "--out", str(tmp_path / "f"), "--format",
                                   "png"])
    assert res.exit_code == 0, res.output
    assert "analyses.underdiagnosis could not be drawn (AttributeError" in res.output
    figs = {p.name for p in (tmp_path / "f").rglob("analysis_*.png")}
    assert figs == {"analysis_calibration.png", "analysis_power.png"}
    write_site([tmp_path / "results"], tmp_path / "site")
    page = (tmp_path / "site" / "cells" / "synth_cxr" / "edited" / "zeroshot" / "seed0" / "index.html").read_text()
    assert "analyses.underdiagnosis in metrics.json could not be read (AttributeError" in page
    assert 'id="analysis-calibration"' in page and 'id="analysis-power"' in page
