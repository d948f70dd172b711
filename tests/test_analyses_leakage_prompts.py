"""Attribute leakage (issue 19 item 2) and prompt sensitivity (item 3): controls and independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fairbench.data.task import builtin_tasks_dir

# synth_cxr's generator with only the age degradation and no attribute-shaped anatomy: sex and race then have
# no effect on the images at all (docs/synthetic.md), age >= 60 is visibly degraded
CONTROL_TASK = """\
include: {base}
name: leak_control
dataset:
  options:
    n: {{train: 240, val: 120, test: 240}}
    image_size: 64
    anatomy_by_attribute: false
    bias:
      - {{attribute: age, min: 60, contrast: 0.3, noise: 0.08, blur: 2.0}}
evaluation:
  n_boot: 0
  min_group_size: 10
"""


@pytest.fixture(scope="module")
def control_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    (root / "leak_control").mkdir()
    base = builtin_tasks_dir() / "synth_cxr" / "synth_cxr.yaml"
    (root / "leak_control" / "leak_control.yaml").write_text(CONTROL_TASK.format(base=base))
    return root


@pytest.fixture(scope="module")
def leakage_doc(control_dir: Path, one_torch_thread: None) -> dict:
    from fairbench.leakage_command import run_leakage

    return run_leakage(task="leak_control", model="tinyclip", tasks_dirs=(control_dir,), n_boot=300, device="cpu")


def test_leakage_age_leaks_and_image_free_attributes_sit_at_chance(leakage_doc: dict) -> None:
    leak = leakage_doc["leakage"]
    age = leak["age"]
    assert age["auc"] > 0.8 and age["ci"][0] > 0.7, age
    for a in ("sex", "race"):  # no rendering effect: the interval must cover chance
        r = leak[a]
        assert r["ci"][0] <= 0.5 <= r["ci"][1], (a, r)
        assert r["chance"] == 0.5 and r["n"] == 240
    assert leak["race"]["groups"] == ["Asian", "Black", "White"]


def test_leakage_command_train_max_caps_the_fit_set(control_dir: Path, leakage_doc: dict) -> None:
    from fairbench.leakage_command import run_leakage

    # the whole split by default; --train-max 100: 100 of the 240 training images beside the 120 of val
    assert leakage_doc["leakage"]["age"]["fit_train"] == {"n": 240, "of": 240}
    assert leakage_doc["leakage"]["age"]["n_fit"] == 240 + 120
    doc = run_leakage(task="leak_control", model="tinyclip", tasks_dirs=(control_dir,), n_boot=50, device="cpu",
                      train_max=100)
    age = doc["leakage"]["age"]
    assert doc["train_max"] == 100 and age["fit_train"] == {"n": 100, "of": 240, "subsample_seed": 0}
    assert age["n_fit"] == 100 + 120 and age["auc"] > 0.9  # the degraded group is still read


def test_leakage_auc_matches_sklearn_on_planted_data() -> None:
    """A planted linear signal is found, and the three-group AUC is sklearn's macro one-vs-rest on the probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from fairbench.analyses.leakage import attribute_leakage

    rng = np.random.default_rng(0)
    g = rng.choice(np.array(["a", "b", "c"], dtype=object), 900)
    x = rng.normal(size=(900, 8))
    x[:, 0] += (g == "b") * 1.5
    x[:, 1] += (g == "c") * 1.5
    r = attribute_leakage(x[:600], g[:600], x[600:], g[600:], n_boot=100, seed=0)
    y = np.searchsorted(["a", "b", "c"], g)
    # an independent probe (plain logistic regression): same signal, AUC within a couple of points
    ref = roc_auc_score(y[600:], LogisticRegression(max_iter=1000).fit(x[:600], y[:600]).predict_proba(x[600:]),
                        multi_class="ovr", average="macro")
    assert ref > 0.75 and abs(r["auc"] - ref) < 0.02 and r["ci"][0] < r["auc"] < r["ci"][1]
    null = attribute_leakage(rng.normal(size=(600, 8)), g[:600], rng.normal(size=(300, 8)), g[600:], n_boot=200)
    assert null["ci"][0] <= 0.5 <= null["ci"][1]
    # the test rows predicted in chunks (7 rows at a time, from float32 embeddings) give the same record
    from fairbench.analyses import leakage

    x32 = x.astype(np.float32)
    whole = attribute_leakage(x[:600], g[:600], x32[600:].astype(np.float64), g[600:], n_boot=100, seed=0)
    try:
        leakage.PREDICT_ROWS, before = 7, leakage.PREDICT_ROWS
        chunked = attribute_leakage(x[:600], g[:600], x32[600:], g[600:], n_boot=100, seed=0)
    finally:
        leakage.PREDICT_ROWS = before
    assert chunked | {"fit_s": 0} == whole | {"fit_s": 0}


def test_leakage_bootstrap_memory_does_not_grow_with_resamples_times_samples() -> None:
    """100 000 test samples, 3 groups, 200 resamples: one [200, n] int64 array alone is 153 MiB; the blocked
    bootstrap's traced peak stays under 80 MiB (the code that drew all resamples at once and took blocks of 250
    peaked far above it)."""
    import tracemalloc

    from fairbench.analyses.leakage import bootstrap_aucs

    rng = np.random.default_rng(0)
    n = 100_000
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n)
    tracemalloc.start()
    try:
        got = bootstrap_aucs(y, p, 3, 200, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert got.shape == (200,) and np.all(np.abs(got - 0.5) < 0.02)  # random scores: chance


@pytest.mark.parametrize("k,n,ties,block_bytes", [(2, 400, False, None), (2, 60, True, None), (3, 300, False, None),
                                                  (3, 30, True, None), (4, 10, True, None), (2, 400, False, 7 * 64 * 400),
                                                  (3, 300, False, 1)])
def test_leakage_bootstrap_is_sklearn_auc_on_each_resample(k: int, n: int, ties: bool, block_bytes: int | None,
                                                           monkeypatch) -> None:
    """The vectorised bootstrap gives, resample by resample, sklearn's AUC on ``rng.integers(0, n, n)`` drawn one
    resample at a time (tied scores, resamples missing a group or a whole class included)."""
    from sklearn.metrics import roc_auc_score

    from fairbench.analyses import leakage
    from fairbench.analyses.leakage import bootstrap_aucs

    if block_bytes is not None:  # small blocks of resamples (7, and 1 at a time): the same resamples, block by block
        monkeypatch.setattr(leakage, "BOOT_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(7)
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    p = rng.dirichlet(np.ones(k), n)
    if ties:  # few distinct scores: ties across groups
        p = np.round(p, 1) + 1e-3
        p /= p.sum(axis=1, keepdims=True)
    draw = np.random.default_rng(3)
    ref = []
    for _ in range(200):
        i = draw.integers(0, n, n)
        yi, pi = y[i], p[i]
        present = np.unique(yi)
        if len(present) < 2:
            ref.append(np.nan)
        elif k == 2:
            ref.append(roc_auc_score(yi, pi[:, 1]))
        elif len(present) == k:
            ref.append(roc_auc_score(yi, pi, multi_class="ovr", average="macro"))
        else:  # macro one-vs-rest over the groups present, each scored by its own column renormalised
            sub = pi[:, present] / pi[:, present].sum(axis=1, keepdims=True)
            ref.append(np.mean([roc_auc_score(yi == c, sub[:, j]) for j, c in enumerate(present)]))
    got = bootstrap_aucs(y, p, k, 200, 3)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(got)], np.asarray(ref)[~np.isnan(ref)], rtol=0, atol=1e-12)


def test_frozen_cell_records_leakage(micro_task_dir, tmp_path: Path, one_torch_thread: None) -> None:
    from fairbench.pipeline import RunConfig, run_cell

    tasks = micro_task_dir("leak_cell", (80, 40, 60))
    res = run_cell(RunConfig(task="leak_cell", model="tinyclip", adapt="linear_probe", out=tmp_path / "r",
                             tasks_dirs=(tasks,), device="cpu", n_boot=50))
    leak = res.metrics["analyses"]["leakage"]
    assert set(leak) == {"sex", "age", "race"}
    for r in leak.values():
        assert {"auc", "ci", "chance", "n"} <= set(r) and r["n"] == 60
    assert leak["age"]["auc"] > 0.7  # synth_cxr's degraded >= 60 group, even on 120 fitting images


def test_cell_probe_fits_a_fixed_train_subsample_whatever_is_cached(micro_task_dir, tmp_path: Path,
                                                                    one_torch_thread: None, monkeypatch) -> None:
    """A cell's probe fits on val + a fixed subsample of the training split (analyses.leakage.CELL_TRAIN_MAX),
    encoded as a cache entry of its own: a zero-shot cell (which encodes only val and test for itself) does not
    encode the whole training split, and the leakage it reports is the same bit for bit whether the training split
    was encoded first (a linear-probe cell) or not, and with the embedding cache off."""
    from fairbench.analyses import leakage
    from fairbench.pipeline import RunConfig, run_cell

    monkeypatch.setattr(leakage, "CELL_TRAIN_MAX", 30)
    tasks = micro_task_dir("leak_sub", (80, 40, 60))

    def cell(adapt: str, out: str, **kw):  # type: ignore[no-untyped-def]
        return run_cell(RunConfig(task="leak_sub", model="tinyclip", adapt=adapt, out=tmp_path / out,
                                  tasks_dirs=(tasks,), device="cpu", n_boot=50, **kw)).metrics

    zs = cell("zeroshot", "a")
    events = {e["split"]: e["event"] for e in zs["embedding_cache"]["events"]}
    assert events == {"val": "miss", "test": "miss", "train:leakage-fit": "miss"}  # no whole-train encode
    assert zs["precision"]["encoded_splits"] == ["test", "val"]
    fit = zs["analyses"]["leakage"]["age"]["fit_train"]
    assert fit == {"n": 30, "of": 80, "subsample_seed": 0}
    # the report's section and the plot say what the probe was fitted on, not "train + val"
    from fairbench.analyses.leakage import fit_description
    from fairbench.report.analyses_view import _leakage_section

    assert fit_description(zs["analyses"]["leakage"]) == "val + 30 of 80 training images"
    intro = _leakage_section(None, zs["analyses"], {})[0]["intro"]
    assert "fitted on val + 30 of 80 training images, scored on test" in intro
    assert fit_description({"age": {"auc": 0.9}}) == "train + val"  # records written before fit_train
    lp = cell("linear_probe", "b")  # encodes the whole training split; the probe still reads its own entry (hit)
    assert {e["split"]: e["event"] for e in lp["embedding_cache"]["events"]}["train:leakage-fit"] == "hit"
    off = cell("zeroshot", "c", embedding_cache=False)
    for a in ("sex", "age", "race"):
        for other in (lp, off):
            assert other["analyses"]["leakage"][a] | {"fit_s": 0} == zs["analyses"]["leakage"][a] | {"fit_s": 0}

    # the subsample entry holds exactly those rows of the whole training split's encoding (read with safetensors)
    from safetensors.numpy import load_file

    keys = {e["split"]: e["key"] for e in lp["embedding_cache"]["events"]}
    root = Path(lp["embedding_cache"]["root"])
    sub = load_file(str(root / keys["train:leakage-fit"][:2] / f"{keys['train:leakage-fit']}.safetensors"))
    whole = load_file(str(root / keys["train"][:2] / f"{keys['train']}.safetensors"))
    # each subsample row is one row of the whole split's encoding; 30 distinct rows, all in one of the synthetic
    # loader's chunks of 64 (whole runs: the subsample renders 64 images, not the split's 80)
    dist = ((sub["embedding"][:, None, :] - whole["embedding"][None, :, :]) ** 2).sum(-1)
    rows = dist.argmin(1)
    assert dist.min(1).max() < 1e-8 and len(set(rows.tolist())) == 30
    assert len(set((rows // 64).tolist())) == 1


def test_train_rows_takes_whole_runs_of_a_block() -> None:
    from fairbench.analyses.leakage import train_rows

    assert train_rows(100, 100) is None and train_rows(100, None) is None
    plain = train_rows(1000, 100)
    assert len(set(plain.tolist())) == 100 and len(set((plain // 64).tolist())) > 2
    runs = train_rows(1000, 100, 64)
    assert len(set(runs.tolist())) == 100 and runs.max() < 1000
    assert len(set((runs // 64).tolist())) == 2  # ceil(100 / 64) chunks rendered, not the 16 a plain draw touches
    assert np.array_equal(train_rows(1000, 100, 64), runs)  # fixed: the same rows every time


def _independent_probs(model, pixels_embedding, prompts):
    """CLIP's prompt ensembling written out: mean of normalised text embeddings, cosine, softmax."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        cls = torch.stack([F.normalize(F.normalize(model.encode_text(model.tokenize(p)).float(), dim=-1).mean(0),
                                       dim=-1) for p in prompts])
        img = F.normalize(torch.as_tensor(pixels_embedding).float(), dim=-1)
        # the model's learned logit scale: at 100, float32 softmax saturates and ties change the AUC in the 4th digit
        return torch.softmax(model.logit_scale().float() * img @ cls.T, dim=1).numpy()


def test_prompt_sensitivity_per_template_auc_is_independent_auc(micro_task_dir, tmp_path: Path,
                                                                 one_torch_thread: None) -> None:
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    from fairbench.adapters.base import AdaptContext
    from fairbench.analyses.prompts import VARIANTS
    from fairbench.data.task import get_task
    from fairbench.errors import ResultsError
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model
    from fairbench.pipeline import RunConfig, run_cell

    tasks = micro_task_dir("prompt_cell", (40, 40, 120))
    cfg = {"task": "prompt_cell", "model": "tinyclip", "adapt": "zeroshot", "tasks_dirs": (tasks,), "device": "cpu",
           "n_boot": 20}
    res = run_cell(RunConfig(**cfg, out=tmp_path / "all", adapt_args={"templates": "all"}))
    doc = res.metrics
    assert doc["adapt"]["params"] == {"ensemble": "family", "templates": "all"}
    pr = doc["analyses"]["prompts"]
    task = get_task("prompt_cell", [tasks])
    kinds = [r["kind"] for r in pr["templates"]]
    assert kinds.count("card") == len(task.prompts.templates) and kinds[-1] == "ensemble"
    assert [r["template"] for r in pr["templates"] if r["kind"] == "variant"] == [
        v for v in VARIANTS if v not in task.prompts.templates]

    # the reference: the model's own towers, one template, the scoring written out here; the image embeddings the
    # cell used (the embedding cache), so that only the per-template scoring is under test
    model = build_model(get_model_card("tinyclip"), None, torch.device("cpu"))
    ctx = AdaptContext(task=task, model=model, seed=0)
    test = ctx.split("test")
    emb = ctx.encode("test")["embedding"]
    checked = 0
    for r in pr["templates"]:
        if r["kind"] == "ensemble":
            continue
        prompts = [[r["template"].format(n) for n in task.prompts.classnames[c]] for c in task.classes]
        p = _independent_probs(model, emb, prompts)
        assert r["auc"] == pytest.approx(roc_auc_score(test.labels, p[:, 1]), abs=1e-9), r["template"]
        for a, rec in r["gaps"].items():
            groups = np.asarray(test.attributes[a], dtype=object)
            aucs = {g: roc_auc_score(test.labels[groups == g], p[groups == g, 1]) for g in rec["groups"]}
            assert rec["groups"] == pytest.approx(aucs, abs=1e-9)
            if rec["gap"] is not None:
                assert rec["gap"] == pytest.approx(max(aucs.values()) - min(aucs.values()), abs=1e-12)
        checked += 1
    assert checked >= 6
    singles = [r["auc"] for r in pr["templates"] if r["kind"] != "ensemble"]
    assert pr["spread"]["auc"]["min"] == min(singles) and pr["spread"]["auc"]["sd"] == pytest.approx(
        float(np.std(singles, ddof=1)))

    # the cell's own predictions are the default ensemble's; a default run over this cell is refused as stale
    default = run_cell(RunConfig(**cfg, out=tmp_path / "default"))
    a = pd.read_parquet(res.path / "predictions.parquet")
    b = pd.read_parquet(default.path / "predictions.parquet")
    assert np.array_equal(a["prob_abnormal"].to_numpy(), b["prob_abnormal"].to_numpy())
    assert "prompts" not in default.metrics.get("analyses", {})
    assert pr["templates"][-1]["auc"] == pytest.approx(default.metrics["metrics"]["overall"]["auc"],
                                                       abs=1e-12)
    with pytest.raises(ResultsError, match="templates"):
        run_cell(RunConfig(**cfg, out=tmp_path / "all"))


def test_zeroshot_templates_value_checked() -> None:
    from fairbench.adapters.zeroshot import ZeroShot
    from fairbench.errors import FairbenchError

    with pytest.raises(FairbenchError, match="templates must be default or all"):
        ZeroShot({"templates": "some"})
    assert ZeroShot({}).params == {"ensemble": "family"}


def test_prompt_plot_draws_each_template(tmp_path: Path) -> None:
    from fairbench.report.plots_analyses import plot_prompt_sensitivity

    rec = {"templates": [{"kind": "card", "template": "{}", "auc": 0.7, "gaps": {"age": {"gap": 0.1}}},
                         {"kind": "ensemble", "template": "x", "auc": 0.72, "gaps": {"age": {"gap": None}}}]}
    (png,) = plot_prompt_sensitivity(rec, tmp_path / "prompts")
    assert png.exists() and png.stat().st_size > 1000
    with pytest.raises(Exception, match="templates=all"):
        plot_prompt_sensitivity({"templates": []}, tmp_path / "none")
