"""`fairbench report` on fabricated cells: a page per task and per cell, every local link resolving inside the
site, nothing loaded from outside it, the same numbers as the markdown leaderboard, figures reused rather than
redrawn, and (where Chromium is installed) a real browser that loads the pages, sorts a column and renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fixtures_results import fabricate_cell, fabricate_sweep
from PIL import Image
from test_cli import assert_one_line_error, fairbench

from fairbench.report.collect import collect
from fairbench.report.html import write_site
from fairbench.report.leaderboard import build_pages
from fairbench.results import write_json

ATTRS = ("sex", "age", "race", "sex*age")
EPOCHS = [{"epoch": i, "train_loss": 0.9 - 0.1 * i, "clip_loss": 0.8 - 0.1 * i, "val_auc": 0.6 + 0.05 * i}
          for i in range(4)]
SKIPPED = [{"split": "test", "sample_id": "test-00017", "reason": "missing file"},
           {"split": "val", "sample_id": "val-00003", "reason": "truncated image"}]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "results"
    fabricate_sweep(root, seeds=(0,), n_boot=20)
    for adapt, strength in (("zeroshot", 0.4), ("linear_probe", 0.9)):  # a pair for "versus zeroshot"
        fabricate_cell(root, task="synth_cxr_fair", model="pair", adapt=adapt, strength=strength, n_boot=20,
                       same_samples=True)
    trained = root / "synth_cxr" / "good" / "linear_probe" / "seed0" / "metrics.json"
    doc = json.loads(trained.read_text())
    doc["adapt"]["fitted"] = {"epochs": EPOCHS, "best_epoch": 3, "val_auc_by_C": {"0.001": 0.8039867109634552}}
    doc["data"] = {"allow_skip_unreadable": True, "n_skipped": 2, "skipped": SKIPPED}
    write_json(trained, doc)
    return root


@pytest.fixture(scope="module")
def site(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    report = write_site([results], out, reference="zeroshot")
    assert not report.collection.problems and not report.problems
    return out, report


# -- structure ------------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """Every URL a page refers to (href, src, xlink:href, CSS url()), its ids, and its tables' rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str]] = []
        self.ids: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.svgs: list[dict[str, str]] = []
        self.scripts = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src", "xlink:href", "poster", "data"):
            if a.get(key):
                self.urls.append((tag, a[key]))
        for value in a.values():
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", value or ""):
                self.urls.append((tag, url))
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "svg" and "role" in a:
            self.svgs.append(a)
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_task_and_cell_has_its_page(site, results):
    out, report = site
    cells = collect([results]).cells
    assert len(cells) == 5
    for c in cells:
        page = out / "cells" / c.task / c.model / c.adapt / f"seed{c.seed}" / "index.html"
        assert page.is_file(), page
        assert json.loads((page.parent / "metrics.json").read_text()) == c.doc  # the cell's file, linked
    for task in ("synth_cxr", "synth_cxr_fair"):
        assert (out / "tasks" / f"{task}.html").is_file()
    assert (out / "index.html").is_file()
    assert len(report.pages) == 5 + 2 + 1


def test_every_local_link_resolves_inside_the_site_and_nothing_comes_from_outside(site):
    out, _ = site
    pages = sorted(out.rglob("*.html"))
    checked = 0
    for page in pages:
        parsed = parse(page)
        for tag, url in parsed.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page}: {tag} refers outside the site: {url}"
            if not parts.path:  # a fragment: an element of this page
                assert parts.fragment in parsed.ids, f"{page}: no element #{parts.fragment}"
                continue
            target = (page.parent / parts.path).resolve()
            assert target.is_file(), f"{page}: {url} does not resolve to a file"
            assert target.is_relative_to(out.resolve()), f"{page}: {url} leaves the site"
            checked += 1
        assert parsed.scripts == 1  # the site's own sort.js, nothing else
        assert len(parsed.ids) == len(set(parsed.ids)), f"{page}: duplicate ids (inline figures share a page)"
    assert checked > 3 * len(pages)
    css = (out / "assets" / "site.css").read_text()
    assert "@import" not in css and "url(" not in css and "@font-face" not in css


def test_task_tables_hold_the_markdown_leaderboards_numbers(site, results):
    out, _ = site
    md = build_pages(collect([results]), reported={}, reference="zeroshot")["synth_cxr.md"]
    blocks = {}
    for block in md.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        rows = [[c.strip().strip("*") for c in ln.strip("|").split("|")] for ln in body.splitlines()
                if ln.startswith("|") and not ln.startswith("|---")]
        blocks[title] = rows
    html = parse(out / "tasks" / "synth_cxr.html").tables
    utility = [[c.replace(" ⇅", "") for c in r] for r in html["utility"]]
    # the markdown has no "cells" column (links to the cell pages): drop it, then every text matches
    assert [r[:3] + r[4:] for r in utility] == blocks["Utility"]
    for attr in ATTRS:
        kind = "intersection" if "*" in attr else "attribute"
        assert html[f"fair-{attr.replace('*', '_x_')}"] == blocks[f"Fairness: {attr} ({kind})"], attr
    assert "versus-age" in html and "versus-age" in parse(out / "tasks" / "synth_cxr_fair.html").tables


def test_bold_marks_the_best_entry_of_each_column(site):
    out, _ = site
    text = (out / "tasks" / "synth_cxr.html").read_text()
    utility = text.split('id="utility"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", utility, flags=re.DOTALL)[1:]
    auc = [re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.DOTALL)[3] for r in rows]  # adapter, seeds, cells, AUC
    assert auc[0].startswith("<strong>") and not any(a.startswith("<strong>") for a in auc[1:])
    assert "good" in rows[0]  # the fabricated order: good separates best


def test_cell_page_shows_every_metric_with_its_interval_and_the_provenance(site, results):
    out, _ = site
    cell = results / "synth_cxr" / "good" / "linear_probe" / "seed0"
    doc = json.loads((cell / "metrics.json").read_text())
    page = out / "cells" / "synth_cxr" / "good" / "linear_probe" / "seed0" / "index.html"
    parsed = parse(page)
    text = page.read_text()
    overall = {re.sub(r" [↑↓]$", "", r[0]): r[1:] for r in parsed.tables["overall"][1:]}
    m, ci = doc["metrics"]["overall"], doc["metrics"]["ci"]["overall"]
    # independent of the page's code: x100, one decimal, the bootstrap interval in brackets
    assert overall["AUC"] == [f"{100 * m['auc']:.1f}", f"[{100 * ci['auc'][0]:.1f}, {100 * ci['auc'][1]:.1f}]"]
    assert overall["ECE"][0] == f"{100 * m['ece']:.1f}"
    assert overall["n"] == [str(m["n"]), ""]
    for attr in ATTRS:
        slug = attr.replace("*", "_x_")
        groups = parsed.tables[f"groups-{slug}"]
        assert [r[0] for r in groups[1:]] == list(doc["metrics"]["attributes"][attr]["groups"])
        a = doc["metrics"]["attributes"][attr]
        es = next(r for r in parsed.tables[f"attr-{slug}"] if r[0].startswith("ES-AUC"))
        assert es[1] == f"{100 * a['es_auc']:.1f}"
    labels = [s["aria-label"] for s in parsed.svgs]
    assert sum(f"protected attribute {a}:" in lbl for a in ATTRS for lbl in labels) == len(ATTRS)
    assert any("training curves" in lbl for lbl in labels)  # the adapter recorded epochs
    assert "chosen_on" in text and doc["threshold"]["chosen_on"] in text
    for value in (doc["provenance"]["git_commit"], doc["config_sha256"], doc["task"]["samples_sha256"],
                  doc["model"]["weights"]["source"], "test-00017", "truncated image"):
        assert value in text, value
    assert "2 samples left out" in text
    assert "SYNTHETIC" in text


def test_index_lists_the_tasks_and_keeps_reported_numbers_apart(site, results, tmp_path):
    out, _ = site
    rows = parse(out / "index.html").tables["tasks"]
    assert [r[0] for r in rows[1:]] == ["synth_cxr", "synth_cxr_fair"]
    by_task = {r[0]: r for r in rows[1:]}
    assert by_task["synth_cxr"][2] == "3" and by_task["synth_cxr"][3] == "biased, good, weak"
    assert by_task["synth_cxr_fair"][4] == "linear_probe, zeroshot" and by_task["synth_cxr"][6] == "SYNTHETIC"
    assert by_task["synth_cxr"][7].startswith("RANDOM in")  # the fabricated cells record --weights random
    text = (out / "index.html").read_text()
    assert "Reported in papers (not reproduced by fairbench): synth_cxr" in text
    assert "Synthetic task: no published numbers exist for it." in text
    # a task on real data (here: a cell marked so) with a curated source: its table stands apart, values x100
    real = tmp_path / "real" / "synth_cxr" / "good"
    shutil.copytree(results / "synth_cxr" / "good", real)
    doc = json.loads((real / "linear_probe" / "seed0" / "metrics.json").read_text())
    doc["task"]["synthetic"] = False
    write_json(real / "linear_probe" / "seed0" / "metrics.json", doc)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "synth_cxr.yaml").write_text(textwrap.dedent("""\
        task: synth_cxr
        sources:
          - id: demo
            citation: Demo et al. 2099
            columns: [overall.auc]
            rows: [{method: CLIP, values: [0.812]}]
        """))
    site2 = tmp_path / "site2"
    write_site([tmp_path / "real"], site2, reported_dir=tmp_path / "rep", figures=out / "figures")
    index = (site2 / "index.html").read_text()
    assert parse(site2 / "index.html").tables["reported-1"][1] == ["CLIP [1]", "81.2"]
    assert index.index('id="tasks"') < index.index("Reported in papers") < index.index('id="reported-1"')
    assert "SYNTHETIC" not in index and "Demo et al. 2099" in (site2 / "tasks" / "synth_cxr.html").read_text()


# -- figures: reused, not redrawn -------------------------------------------------------------------------
def test_figures_from_fairbench_plot_are_reused_and_stale_ones_redrawn(results, tmp_path):
    from fairbench.report.plot_run import plot_results

    cell = results / "synth_cxr_fair"
    figs = tmp_path / "figs"
    plot_results([cell], figs, formats=("svg",))
    marker = "<!-- drawn by fairbench plot -->"
    age = figs / "synth_cxr_fair" / "pair" / "zeroshot" / "seed0" / "age.svg"
    age.write_text(age.read_text() + marker)
    report = write_site([cell], tmp_path / "site", figures=figs)
    # per cell its attribute figures and three analysis figures (underdiagnosis, calibration, power)
    assert report.figures_drawn == 0 and report.figures_reused == 2 * (len(ATTRS) + 3) + 1
    page = tmp_path / "site" / "cells" / "synth_cxr_fair" / "pair" / "zeroshot" / "seed0" / "index.html"
    assert marker in page.read_text()
    # a figure older than its cell's results is stale: that cell's figures are drawn again (into the site)
    old = (cell / "pair" / "zeroshot" / "seed0" / "metrics.json").stat().st_mtime - 100
    os.utime(age, (old, old))
    report = write_site([cell], tmp_path / "site", figures=figs)
    assert report.figures_drawn == len(ATTRS) and marker not in page.read_text()
    assert (tmp_path / "site" / "figures" / "synth_cxr_fair" / "pair" / "zeroshot" / "seed0" / "age.svg").is_file()


# -- the command line -------------------------------------------------------------------------------------
def test_cli_report_and_its_one_line_errors(site, results, tmp_path):
    out, _ = site
    proc = fairbench("report", str(results / "synth_cxr_fair"), "--out", str(tmp_path / "s"),
                     "--figures", str(out / "figures"))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 pages" in proc.stderr and "0 drawn" in proc.stderr
    assert_one_line_error(fairbench("report", str(tmp_path / "nothing"), "--out", str(tmp_path / "s")),
                          "nothing", "no such results folder")
    assert_one_line_error(fairbench("report", str(results), "--out", str(tmp_path / "s"), "--figures",
                                    str(tmp_path / "nofigs")), "--figures", "nofigs")
    (tmp_path / "file").write_text("")
    assert_one_line_error(fairbench("report", str(results), "--out", str(tmp_path / "file")), "--out", "file")


def test_sweep_file_report_option_writes_the_site(results, tmp_path):
    from fairbench.sweep import load_sweep_file
    from fairbench.sweep.command import write_sweep_report

    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "sweep.yaml"
    f.write_text(f"tasks: [synth_cxr_fair]\nmodels: [pair]\nadapts: [zeroshot]\nout: {results / 'synth_cxr_fair'}\n"
                 "report: ../site\n")
    spec = load_sweep_file(f)
    assert spec.report == (tmp_path / "site").resolve()
    write_sweep_report(spec)
    assert (tmp_path / "site" / "tasks" / "synth_cxr_fair.html").is_file()


def test_sweep_command_writes_the_report_after_the_run_and_not_on_a_dry_run(results, tmp_path, monkeypatch):
    from fairbench.sweep import SweepSpec, command
    from fairbench.sweep.driver import SweepReport

    ran = []
    monkeypatch.setattr(command, "run_sweep", lambda spec: ran.append(spec) or SweepReport(cells=[]))
    monkeypatch.setattr(command, "print_plan", lambda spec: None)
    spec = SweepSpec(tasks=["synth_cxr_fair"], models=["tinyclip"], adapts=["zeroshot"],
                     options={"out": results / "synth_cxr_fair"}, report=tmp_path / "site")
    command.sweep_command(spec, dry_run=True)
    assert not (tmp_path / "site").exists()
    command.sweep_command(spec)
    assert ran and (tmp_path / "site" / "index.html").is_file()


# -- a real browser -----------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package chromium)")
def test_headless_chromium_loads_the_pages_sorts_a_column_and_renders(site, tmp_path):
    out, _ = site
    index = chromium("--dump-dom", (out / "index.html").resolve().as_uri(), profile=tmp_path / "p1")
    assert index.returncode == 0, index.stderr[-2000:]
    assert 'href="tasks/synth_cxr.html"' in index.stdout
    task = (out / "tasks" / "synth_cxr.html").resolve().as_uri()
    before = parse(out / "tasks" / "synth_cxr.html").tables["utility"]
    auc_before = [float(r[4].split()[0]) for r in before[1:]]
    assert auc_before == sorted(auc_before, reverse=True)  # as written: by AUC, best first
    dom = chromium("--dump-dom", task + "#sort=utility:auc,asc", profile=tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page()
    page.feed(dom.stdout)
    rows = page.tables["utility"][1:]
    assert [float(r[4].split()[0]) for r in rows] == sorted(auc_before)  # the script re-ordered the rows
    assert 'data-sorted="auc,asc"' in dom.stdout and 'aria-sort="ascending"' in dom.stdout
    # sort by a text column, descending
    dom = chromium("--dump-dom", task + "#sort=utility:model,desc", profile=tmp_path / "p3")
    page = Page()
    page.feed(dom.stdout)
    assert [r[0].removesuffix(" (random weights)") for r in page.tables["utility"][1:]] == ["weak", "good", "biased"]
    shot = tmp_path / "task.png"
    proc = chromium("--window-size=1280,1000", f"--screenshot={shot}", task + "#sort=utility:auc,asc",
                    profile=tmp_path / "p4")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (1000, 1280)
    assert img.std() > 20  # not blank: text and tables on a white page
    assert (img > 245).mean() > 0.5 and (img < 100).mean() > 0.01


def test_pages_say_when_weights_are_random_and_what_was_left_out(results, tmp_path):
    """The site says what the markdown page says: rows of untrained models are marked, and a cell whose
    metrics.json could not be read is named on its task's page (its seed is missing from the means)."""
    root = tmp_path / "results"
    shutil.copytree(results, root)
    broken = root / "synth_cxr" / "weak" / "zeroshot" / "seed9"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text("{not json")
    out = tmp_path / "site"
    report = write_site([root], out)
    assert report.collection.problems
    text = (out / "tasks" / "synth_cxr.html").read_text()
    assert "Left out" in text and "synth_cxr/weak/zeroshot/seed9" in text
    assert "Left out" not in (out / "tasks" / "synth_cxr_fair.html").read_text()
    assert "Random weights" in text  # the fabricated cells record --weights random
    rows = parse(out / "tasks" / "synth_cxr.html").tables["utility"][1:]
    assert rows and all("(random weights)" in r[0] for r in rows)
    cell = next((out / "cells").rglob("index.html")).read_text()
    assert "RANDOM WEIGHTS" in cell
    index = {r[0]: r for r in parse(out / "index.html").tables["tasks"][1:]}
    n = index["synth_cxr"][2]  # the cells column
    assert index["synth_cxr"][7] == f"RANDOM in {n} of {n} cells"  # every fabricated cell records random weights


# -- structure: public modules, one slug, labels on the metric specs (issue 23) ---------------------------
def test_report_modules_reach_no_private_name_of_another_module():
    """The report side imports public names only (html.py took eight private names of leaderboard.py), and the
    file-name slug the figures and the report's links share is one function."""
    import ast

    import fairbench.report as report_pkg
    from fairbench.report import formatting, html, plots

    reach_ins = []
    for name in ("html", "leaderboard", "tables", "formatting", "plots", "reported"):
        path = Path(report_pkg.__file__).parent / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fairbench"):
                reach_ins += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert not reach_ins, reach_ins
    assert html.slug is formatting.slug and plots.slug is formatting.slug
    assert formatting.slug("sex*age") == "sex_x_age" and formatting.slug("a b/c") == "a_b_c"


def test_every_metric_names_its_label_and_direction_on_its_spec():
    from fairbench.metrics import METRICS
    from fairbench.report import leaderboard
    from fairbench.report.formatting import arrow, metric_label

    names = list(METRICS)
    assert len(names) > 30
    for name in names:
        spec = METRICS.get(name)
        assert spec.label, name
        assert metric_label(name) == spec.label
    assert not hasattr(leaderboard, "LABELS")  # no second table of labels
    # a few labels and directions as docs/leaderboards.md states them
    assert [metric_label(m) for m in ("es_auc", "auc_gap", "deodds", "eqodds_fairmedfm")] == [
        "ES-AUC", "AUC gap", "DEOdds", "EqOdds (FairMedFM)"]
    assert [arrow(m) for m in ("auc", "es_auc", "eqodds", "ece", "auc_gap", "dpd", "deodds")] == [" ↑"] * 3 + [" ↓"] * 4
    assert arrow("selection_rate") == "" and arrow("n") == ""


# -- the report as a reader sees it (issue 21, items 9-12) -------------------------------------------------
def _x100(v: float) -> str:
    return f"{100 * v:.1f}"


def test_index_leads_with_each_tasks_headline_numbers_and_a_summary_per_model(site, results):
    """The landing page shows numbers: per task the best and worst rows by AUC with each row's largest gap over
    the protected attributes, and per model its best row on every task; the same numbers as the task pages."""
    out, _ = site
    tables = parse(out / "index.html").tables
    utility = {(r[0], r[1]): r for r in parse(out / "tasks" / "synth_cxr.html").tables["utility"][1:]}
    head = tables["headline-synth_cxr"]
    labels = [h.replace(" ⇅", "") for h in head[0]]
    assert labels[:2] == ["model", "adapter"] and any(h.startswith("AUC") for h in labels)
    auc_col = next(i for i, h in enumerate(labels) if h.startswith("AUC"))
    rows = head[1:]
    assert rows[0][0].startswith("good")  # best first, as on the task page
    for r in rows:  # the AUC entry is the task page's, cell for cell
        assert r[auc_col] == utility[(r[0], r[1])][4]
    # each row's largest AUC gap, with the attribute it occurs in, computed here from the cells themselves
    cells = [c for c in collect([results]).cells if c.task == "synth_cxr"]
    gap_col = next(i for i, h in enumerate(labels) if h.startswith("largest AUC gap"))
    for r in rows:
        cell = next(c for c in cells if c.adapt == r[1] and r[0].startswith(c.model))
        gaps = {a: v["auc_gap"] for a, v in cell.metrics["attributes"].items() if v.get("auc_gap") is not None}
        attr = max(gaps, key=gaps.get)
        assert r[gap_col].split(" [")[0] == _x100(gaps[attr]) and f"({attr})" in r[gap_col], (r, gaps)
    # a cross-task summary, one row per model
    models = tables["models"]
    assert sorted(r[0] for r in models[1:]) == ["biased", "good", "pair", "weak"]
    good = next(r for r in models[1:] if r[0] == "good")
    best_good = max((utility[k] for k in utility if k[0].startswith("good")), key=lambda r: float(r[4].split()[0]))
    assert best_good[4].split()[0] in " ".join(good) and best_good[1] in " ".join(good)
    text = (out / "index.html").read_text()
    assert text.index('id="headline-synth_cxr"') < text.index('id="tasks"')  # numbers first


def _widths_page(page: Path, tmp: Path) -> Path:
    """A copy of ``page`` (same folder, so its links resolve) with a script that writes every table's width and
    its scroll box's overflow into the DOM, for --dump-dom to read back."""
    script = ("<script>const w=[];for(const t of document.querySelectorAll('table')){const r=t.getBoundingClientRect();"
              "const box=t.parentElement;w.push([t.id||'?',Math.ceil(r.right),t.scrollWidth,box.scrollWidth-box.clientWidth]"
              ".join(':'));}document.body.setAttribute('data-widths',w.join(';'));"
              "document.body.setAttribute('data-vw',document.documentElement.clientWidth);</script>")
    copy = page.parent / f"_widths_{page.name}"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    return copy


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package chromium)")
def test_no_table_is_wider_than_a_1280_px_window(site, tmp_path):
    """At 1280 px every table fits: the race and intersection tables of a task page and a cell page's per-group
    tables (which were cut at FPR) need no sideways scroll."""
    out, _ = site
    pages = [out / "index.html", out / "tasks" / "synth_cxr.html",
             out / "cells" / "synth_cxr" / "good" / "linear_probe" / "seed0" / "index.html"]
    checked = 0
    for i, page in enumerate(pages):
        copy = _widths_page(page, tmp_path)
        try:
            dom = chromium("--window-size=1280,1000", "--dump-dom", copy.resolve().as_uri(),
                           profile=tmp_path / f"w{i}")
        finally:
            copy.unlink()
        assert dom.returncode == 0, dom.stderr[-2000:]
        vw = int(re.search(r'data-vw="(\d+)"', dom.stdout).group(1))
        assert 1200 <= vw <= 1280, vw
        widths = re.search(r'data-widths="([^"]*)"', dom.stdout).group(1).split(";")
        for entry in widths:
            _, right, width, overflow = entry.rsplit(":", 3)
            assert int(right) <= vw and int(width) <= vw and int(overflow) <= 0, (page.name, entry, vw)
            checked += 1
    assert checked >= 12


def test_cell_page_formats_recorded_floats_names_metrics_by_their_labels_and_shows_a_coinciding_twin_once(site, results):
    out, _ = site
    doc = json.loads((results / "synth_cxr" / "good" / "linear_probe" / "seed0" / "metrics.json").read_text())
    page = out / "cells" / "synth_cxr" / "good" / "linear_probe" / "seed0" / "index.html"
    text = page.read_text()
    tables = parse(page).tables
    # a float the adapter recorded: 4 significant digits, not 16
    assert "0.8039867109634552" not in text
    fitted = [r for t in tables.values() for r in t if r and r[0] == "val_auc_by_C.0.001"]
    assert fitted and fitted[0][1] == "0.804"
    # EqOdds and FairMedFM's EqOdds agree on a binary task (TNR = 1 - FPR): one row that names both
    a = doc["metrics"]["attributes"]["sex"]
    assert abs(a["eqodds"] - a["eqodds_fairmedfm"]) < 1e-12  # the premise, from the file
    rows = tables["attr-sex"][1:]
    eq = [r for r in rows if r[0].startswith("EqOdds")]
    assert len(eq) == 1 and "FairMedFM" in eq[0][0] and eq[0][1] == f"{100 * a['eqodds']:.1f}", eq
    # labels, not snake_case keys, in the metric tables and the per-group tables' headers
    labels = [r[0] for name in ("overall", "attr-sex", "attr-sex_x_age") for r in tables[name][1:]]
    labels += [h.replace(" ⇅", "") for h in tables["groups-sex"][0]]
    snake = [lbl for lbl in labels if re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", lbl)]
    assert not snake, snake
    assert "ES-AUC ↑" in labels and "n positive" in labels
