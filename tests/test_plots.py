"""`fairbench plot` on fabricated cells: files exist with the right size and real content (pixels that vary,
the palette's colours, SVG text with titles and group labels), and bad cells are reported and skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_results import fabricate_cell
from PIL import Image
from typer.testing import CliRunner

from fairbench.cli import app
from fairbench.errors import FairbenchError
from fairbench.report.plot_run import plot_results
from fairbench.report.plots import OKABE_ITO


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plots") / "results"
    for model, adapt, strength, bias in (("good", "linear_probe", 0.8, 0.0), ("biased", "zeroshot", 0.8, 0.8)):
        for seed in (0, 1):
            fabricate_cell(root, model=model, adapt=adapt, seed=seed, strength=strength, bias=bias, n_boot=20)
    return root


@pytest.fixture(scope="module")
def figures(results, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("figs")
    written, col, problems = plot_results([results], out, attributes=["age"])
    assert not col.problems and not problems
    return out, written


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def has_colour(img: np.ndarray, hex_colour: str, tol: int = 6) -> bool:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(img - target).max(axis=-1) <= tol).sum() > 200)


def test_one_figure_per_cell_and_attribute_plus_the_tradeoff(figures):
    out, written = figures
    rel = sorted(p.relative_to(out).as_posix() for p in written)
    # per cell: the age figure and the analyses its metrics.json records (fabricated cells: no leakage, no prompts)
    analyses = [f"synth_cxr/good/linear_probe/seed1/analysis_{n}.png" for n in ("underdiagnosis", "calibration",
                                                                                "power")]
    assert len(rel) == 2 * 4 * (1 + len(analyses)) + 2 and set(analyses) <= set(rel)
    assert "synth_cxr/good/linear_probe/seed1/age.png" in rel and "synth_cxr/good/linear_probe/seed1/age.svg" in rel
    assert "synth_cxr/fairness_utility.png" in rel and "synth_cxr/fairness_utility.svg" in rel


def test_cell_figure_has_content(figures):
    out, _ = figures
    png = out / "synth_cxr" / "biased" / "zeroshot" / "seed0" / "age.png"
    img = rgb(png)
    h, w, _ = img.shape
    assert w > 1800 and 600 < h < 1000  # three panels side by side, readable at 150 dpi
    assert img.std() > 30  # not blank
    assert (img.min(axis=-1) > 245).mean() > 0.5  # mostly white background: drawn content, not a fill
    assert has_colour(img, OKABE_ITO[0]) and has_colour(img, OKABE_ITO[1])  # two groups, colour-blind-safe palette
    svg = png.with_suffix(".svg").read_text()
    for text in ("synth_cxr · biased · zeroshot · seed 0 — SYNTHETIC data", "protected attribute: age",
                 "Group metrics, 95% bootstrap CI (B=20)", "ROC per group", "Reliability per group",
                 "false positive rate", "true positive rate", "&lt;60 (n=", "&gt;=60 (n=", "value (x100)"):
        assert text in svg, text
    assert "<dc:date>" not in svg  # no timestamp: the same cell gives the same SVG


def test_tradeoff_figure_labels_every_entry(figures):
    out, _ = figures
    img = rgb(out / "synth_cxr" / "fairness_utility.png")
    assert img.shape[1] > 700 and img.shape[0] > 700 and img.std() > 20
    svg = (out / "synth_cxr" / "fairness_utility.svg").read_text()
    for text in ("good / linear_probe", "biased / zeroshot", "overall AUC (x100)", "ES-AUC for age (x100)",
                 "colour = model, marker = adapter", "SYNTHETIC"):
        assert text in svg, text


def test_missing_predictions_and_bad_metrics_are_reported(results, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(results, root)
    (root / "synth_cxr" / "good" / "linear_probe" / "seed0" / "predictions.parquet").unlink()
    bad = root / "synth_cxr" / "biased" / "zeroshot" / "seed1" / "metrics.json"
    bad.write_text('{"schema_version": 1, "task": {}}')
    res = CliRunner().invoke(app, ["plot", str(root), "--out", str(tmp_path / "f"), "--format", "png",
                                   "--attribute", "sex"])
    assert res.exit_code == 0, res.output
    assert f"skipped {bad}: malformed metrics.json: no task.name" in res.output
    assert "predictions.parquet: no predictions file" in res.output
    figs = sorted(p.relative_to(tmp_path / "f").as_posix() for p in (tmp_path / "f").rglob("*.png"))
    assert "synth_cxr/biased/zeroshot/seed1/sex.png" not in figs
    assert "synth_cxr/good/linear_probe/seed0/sex.png" in figs  # bars still drawn from metrics.json
    # the analysis figures: underdiagnosis and power from metrics.json, calibration only with predictions
    assert "synth_cxr/good/linear_probe/seed0/analysis_power.png" in figs
    assert "synth_cxr/good/linear_probe/seed0/analysis_calibration.png" not in figs
    assert "synth_cxr/good/linear_probe/seed1/analysis_calibration.png" in figs
    assert len(figs) == 3 + 1 + 3 * 2 + 2


def test_bad_arguments_are_one_line_errors(results, tmp_path):
    with pytest.raises(FairbenchError, match="no protected attribute 'ethnicity'.*they have: age, race, sex"):
        plot_results([results], tmp_path, attributes=["ethnicity"])
    with pytest.raises(FairbenchError, match="unknown figure format 'jpg'"):
        plot_results([results], tmp_path, formats=["jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FairbenchError, match="no readable result cells"):
        plot_results([tmp_path / "empty"], tmp_path)


def test_a_point_outside_its_own_interval_is_drawn_clipped_and_marked(tmp_path):
    """Bootstrap percentile intervals of gap statistics (and edited files) can miss their point: matplotlib
    refuses the negative error bar; the figure clips it and says so."""
    import json

    from fairbench.report.plots import OUTSIDE_NOTE

    cell = fabricate_cell(tmp_path / "results", model="m", adapt="a", n_boot=20)
    doc = json.loads((cell / "metrics.json").read_text())
    m = doc["metrics"]
    es_auc = m["attributes"]["age"]["es_auc"]
    m["ci"]["attributes"]["age"]["es_auc"] = [es_auc + 0.02, es_auc + 0.05]  # the tradeoff's one-seed bar
    group = sorted(m["attributes"]["age"]["groups"])[0]
    auc = m["attributes"]["age"]["groups"][group]["auc"]
    m["ci"]["attributes"]["age"]["groups"][group]["auc"] = [auc - 0.08, auc - 0.03]  # a group bar
    (cell / "metrics.json").write_text(json.dumps(doc))
    written, _, problems = plot_results([tmp_path / "results"], tmp_path / "figs", formats=["svg"],
                                        attributes=["age"])
    written = [p for p in written if not p.name.startswith("analysis_")]
    assert not problems and len(written) == 2
    for svg in written:
        assert OUTSIDE_NOTE in svg.read_text(), svg.name
    unmarked, _, _ = plot_results([tmp_path / "results"], tmp_path / "other", formats=["svg"],
                                  attributes=["sex"])  # nothing outside its interval there: no mark
    unmarked = [p for p in unmarked if not p.name.startswith("analysis_")]
    assert unmarked and not any(OUTSIDE_NOTE in svg.read_text() for svg in unmarked)


def _with_epochs(cell: Path, epochs: list[dict], adapt: str) -> None:
    import json

    doc = json.loads((cell / "metrics.json").read_text())
    doc["adapt"] = {"name": adapt, "params": {}, "fitted": {"epochs": epochs}}
    (cell / "metrics.json").write_text(json.dumps(doc))


def test_training_curves_for_cells_that_recorded_epochs(tmp_path):
    from fixtures_results import fabricate_cell

    from fairbench.report.collect import collect
    from fairbench.report.plots import plot_training

    root = tmp_path / "results"
    robust = fabricate_cell(root, model="tinyclip", adapt="robust_fair")
    _with_epochs(robust, [
        {"epoch": e, "train_loss": 2.0 - 0.3 * e, "clip_loss": 2.1 - 0.3 * e, "dbpm_loss": 2.0 - 0.3 * e,
         "val_auc": 0.7 + 0.02 * e, "fair_term": 0.3 - 0.05 * e, "lambda_fair": 1.0, "lambda_x_fair": 0.3 - 0.05 * e,
         "grad_norm_clip": 1.0, "grad_norm_fair": 0.2, "grad_ratio": 0.2 + 0.1 * e, "n_flagged": [0, 0, 12][e],
         "n_reweighted": [0, 0, 12][e], "mean_weight": [None, None, 1e-3][e]} for e in range(3)], "robust_fair")
    off = fabricate_cell(root, model="tinyclip", adapt="fairclip")
    _with_epochs(off, [{"epoch": e, "train_loss": 1.0, "clip_loss": 1.0, "val_auc": 0.7, "fair_term": None,
                        "lambda_fair": 0.0, "lambda_x_fair": 0.0, "grad_norm_clip": 1.0, "grad_norm_fair": 0.0,
                        "grad_ratio": 0.0} for e in range(2)], "fairclip")
    fabricate_cell(root, model="tinyclip", adapt="zeroshot")  # no epochs: no training figure
    out = tmp_path / "figs"
    cells = {c.adapt: c for c in collect([root]).cells}
    assert plot_training(cells["zeroshot"], out) == []
    written = plot_training(cells["robust_fair"], out)
    assert sorted(p.name for p in written) == ["training.png", "training.svg"]
    img = rgb(written[0])
    assert img.shape[1] > 4 * 400 and img.std() > 20  # five panels side by side, not blank
    svg = written[1].read_text()
    for text in ("training curves (3 epochs)", "Loss (epoch mean)", "Selection AUC (val)",
                 "Fairness term (epoch mean, lambda 1)", "Gradient share of the term (first batch)",
                 "DBPM: flagged pairs and their weight", "CLIP loss after DBPM", "equal gradients"):
        assert text in svg, text
    svg_off = [p for p in plot_training(cells["fairclip"], out) if p.suffix == ".svg"][0].read_text()
    assert "term off (lambda_fair = 0)" in svg_off and "no gradient from the term" in svg_off
    assert "DBPM" not in svg_off
    # `fairbench plot` writes them beside the per-attribute figures
    res = CliRunner().invoke(app, ["plot", str(root), "--out", str(tmp_path / "cli"), "--format", "png"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "synth_cxr" / "tinyclip" / "robust_fair" / "seed0" / "training.png").is_file()
    assert not (tmp_path / "cli" / "synth_cxr" / "tinyclip" / "zeroshot" / "seed0" / "training.png").exists()


@pytest.fixture(scope="module")
def versus_results(tmp_path_factory) -> Path:
    """m/fixed repairs what m/ref loses for age >= 60 (same samples, two seeds); other/fixed has no reference."""
    root = tmp_path_factory.mktemp("versus") / "results"
    for seed in (0, 1):
        for adapt, bias in (("ref", 0.8), ("fixed", 0.0)):
            fabricate_cell(root, model="m", adapt=adapt, seed=seed, strength=1.2, bias=bias, n_boot=20,
                           same_samples=True, n_test=1000)
    fabricate_cell(root, model="other", adapt="fixed", seed=0, strength=1.2, bias=0.0, n_boot=20, same_samples=True)
    return root


def test_forest_plot_versus_a_reference(versus_results, tmp_path):
    res = CliRunner().invoke(app, ["plot", str(versus_results), "--out", str(tmp_path / "f"), "--attribute", "age",
                                   "--attribute", "sex", "--reference", "ref"])
    assert res.exit_code == 0, res.output
    png, svg = tmp_path / "f" / "synth_cxr" / "versus_ref.png", tmp_path / "f" / "synth_cxr" / "versus_ref.svg"
    assert png.is_file() and svg.is_file()
    img = rgb(png)
    assert img.std() > 20 and (img.min(axis=-1) > 245).mean() > 0.5  # drawn content on white, not blank
    assert has_colour(img, OKABE_ITO[0], tol=10) and has_colour(img, OKABE_ITO[2], tol=10)  # a colour per metric
    text = svg.read_text()
    for s in ("synth_cxr: B − ref, paired on the same test samples — SYNTHETIC data", "a negative Δ is better",
              "AUC gap, DPD, DEOdds", "m / fixed · AUC ↑ (2 seeds, t)", "m / fixed · AUC gap ↓ (2 seeds, t)",
              "m / fixed · DEOdds ↓ (2 seeds, t)", "age: Δ (x100)", "sex: Δ (x100)",
              "not shown: other / fixed (no reference cell)"):
        assert s in text, s
    assert "<dc:date>" not in text
    assert not (tmp_path / "f" / "synth_cxr" / "versus_fixed.png").exists()


def test_forest_plot_marks_intervals_that_exclude_zero(versus_results, tmp_path):
    from fairbench.report.collect import collect
    from fairbench.report.plots import plot_versus
    from fairbench.report.versus import compute_versus

    v = compute_versus("synth_cxr", collect([versus_results]).cells, "ref")
    age = v.table("age")
    ((_, deltas, _),) = [t for t in age.rows if t[0].ok]
    gap = deltas[2]
    assert gap.delta < 0 and gap.excludes_zero and gap.method == "seeds"
    svg = next(p for p in plot_versus(v, tmp_path, attributes=["age"]) if p.suffix == ".svg").read_text()
    marks = svg.count(">*<")  # one '*' text per marked row (SVG text kept as text)
    assert marks == sum(d is not None and d.excludes_zero for d in deltas) >= 1


def test_forest_plot_unknown_reference_names_the_adapters(versus_results, tmp_path):
    with pytest.raises(FairbenchError, match=r"--reference zeroshot: .*\(adapters present: fixed, ref\)"):
        plot_results([versus_results], tmp_path, reference="zeroshot")
    assert not list(tmp_path.rglob("*.png"))


def test_titles_say_when_weights_are_random(tmp_path):
    from fairbench.report.plot_run import plot_results
    from fairbench.results import read_metrics, write_json

    root = tmp_path / "r"
    fabricate_cell(root, model="rnd", adapt="zeroshot", seed=0)  # fabricated cells record random weights
    trained = fabricate_cell(root, model="trained", adapt="zeroshot", seed=0)
    doc = read_metrics(trained / "metrics.json")
    doc["model"]["weights"] = {"source": "pretrain:synth_cxr", "sha256": "ab" * 32}
    write_json(trained / "metrics.json", doc)
    out = tmp_path / "plots"
    plot_results([root], out, formats=("svg",), attributes=["age"])
    assert "rnd · zeroshot · seed 0 — SYNTHETIC data — RANDOM weights (untrained)" in \
        (out / "synth_cxr" / "rnd" / "zeroshot" / "seed0" / "age.svg").read_text()
    assert "RANDOM" not in (out / "synth_cxr" / "trained" / "zeroshot" / "seed0" / "age.svg").read_text()
    assert "— RANDOM weights (untrained) in 1 of 2 cells" in (out / "synth_cxr" / "fairness_utility.svg").read_text()


# -- one scale, readable labels (issue 21, item 11) ------------------------------------------------------------
def test_figures_use_the_tables_scale_x100(figures, results):
    """Every table shows metrics x100 with one decimal; the figures do too (axes, legends, titles)."""
    import json
    import re

    out, _ = figures
    svg = (out / "synth_cxr" / "good" / "linear_probe" / "seed0" / "age.svg").read_text()
    doc = json.loads((results / "synth_cxr" / "good" / "linear_probe" / "seed0" / "metrics.json").read_text())
    a = doc["metrics"]["attributes"]["age"]
    for group, gm in a["groups"].items():
        assert f"AUC {100 * gm['auc']:.1f})" in svg, group  # the ROC legend, as the group table prints it
    assert f"ES-AUC {100 * a['es_auc']:.1f}" in svg and "x100" in svg
    for text in ("false positive rate (x100)", "true positive rate (x100)", "value (x100)"):
        assert text in svg, text
    assert not re.search(r"\(0–1\)", svg)
    ticks = [float(t) for t in re.findall(r">(\d+(?:\.\d+)?)</text>", svg)]
    assert 100.0 in ticks  # the bar and ROC axes run to 100
    trade = (out / "synth_cxr" / "fairness_utility.svg").read_text()
    assert "overall AUC (x100)" in trade and "(0–1)" not in trade


def test_tradeoff_with_one_model_colours_by_adapter_and_labels_cover_no_marker(tmp_path):
    """With one model, colour = model says nothing: the adapters get the colours (and the legend says so). Point
    labels never cover a marker."""
    for adapt, strength in (("zeroshot", 0.3), ("linear_probe", 0.8), ("mlp", 0.79)):
        fabricate_cell(tmp_path / "results", model="solo", adapt=adapt, strength=strength, n_boot=20)
    written, _, _ = plot_results([tmp_path / "results"], tmp_path / "figs", attributes=["age"])
    png = next(p for p in written if p.name == "fairness_utility.png")
    img = rgb(png)
    assert sum(has_colour(img, c) for c in OKABE_ITO[:3]) == 3  # three adapters, three colours
    svg = png.with_suffix(".svg").read_text()
    assert "colour = model" not in svg and "solo: colour and marker = adapter" in svg


def test_point_labels_cover_no_marker_and_no_other_label():
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    from fairbench.report.plots import _label_points

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.set_xlim(40, 100)
    ax.set_ylim(40, 100)
    points = [(80.0, 80.0, "model a / linear_probe"), (84.0, 81.0, "model a / mlp"),
              (88.0, 80.0, "model b / linear_probe"), (82.0, 76.0, "model b / zeroshot"), (60.0, 62.0, "c / zs")]
    for x, y, _ in points:
        ax.plot([x], [y], marker="o", markersize=8)
    _label_points(ax, points)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    labels = [Text.get_window_extent(t, renderer=r) for t in ax.texts]  # the text itself, not a leader line
    assert len(labels) == len(points)
    rad = 4 * fig.dpi / 72  # markersize 8 pt: radius 4 pt
    markers = [Bbox.from_extents(px - rad, py - rad, px + rad, py + rad)
               for px, py in (ax.transData.transform((x, y)) for x, y, _ in points)]
    for i, box in enumerate(labels):
        assert not any(box.overlaps(m) for m in markers), (ax.texts[i].get_text(), box)
        assert not any(box.overlaps(o) for j, o in enumerate(labels) if j != i), ax.texts[i].get_text()
    plt.close(fig)
