"""The ``fairbench`` command line (typer).

User mistakes raise :class:`~fairbench.errors.FairbenchError` and are printed as one line, exit code 2;
anything else is a bug and keeps its traceback (without locals).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer

from fairbench import __version__
from fairbench.errors import FairbenchError
from fairbench.kv import parse_kv
from fairbench.options import (
    AdaptArgOpt,
    AllowDownloadOpt,
    AllowSkipUnreadableOpt,
    DataRootOpt,
    DeviceOpt,
    EmbeddingCacheOpt,
    EvalDataRootOpt,
    ImageCacheOpt,
    ModelArgOpt,
    NBootOpt,
    OutOpt,
    OverwriteOpt,
    PrecisionOpt,
    SweepAllowSkipUnreadableOpt,
    SweepOverwriteOpt,
    TaskArgOpt,
    TasksDirOpt,
    VariantsOpt,
    WeightsOpt,
    split_names,
)
from fairbench.progress import console as err_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="fairbench",
    help="Measure how fair CLIP-like medical vision-language models are.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- --help in words: switches bare, types as click writes them ---------------------------------------------
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN", "Path": "PATH"}


def _type_word(annotation: Any) -> str:
    if get_origin(annotation) is list and get_args(annotation):
        return _type_word(get_args(annotation)[0])  # a repeatable option takes one value each time
    name = getattr(annotation, "__name__", str(annotation))
    return _TYPE_WORDS.get(name, name.upper())


def _help_type(self: Any, ctx: Any) -> str:
    """What --help shows after an option: nothing for an on/off switch (typer 0.2x shows ``<bool>``, which reads
    as if it took a value), ``TEXT``/``INTEGER``/``PATH`` for a value (not ``<str>``, ``<list[Path]>``), the
    choices for a choice."""
    if getattr(self, "is_flag", False):
        return ""
    desc = self.type_descriptor
    if desc.is_choice and desc.choices and getattr(self, "show_choices", True):
        return "[" + " | ".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"  # wraps between choices
    if desc.is_path:
        return str(desc.path_type).upper()
    return _type_word(desc.annotation)


def _readable_help_types() -> None:
    """Installs :func:`_help_type` where typer renders parameter types (typer >= 0.2x; older typer shows click's
    own metavars, which already read this way)."""
    import typer.core

    param = getattr(typer.core, "_TyperParameter", None)
    if param is not None and hasattr(param, "display_type"):
        param.display_type = _help_type


_readable_help_types()

def _mount_subcommands() -> None:
    from fairbench.data.commands import data_app, tasks_app

    app.add_typer(tasks_app, name="tasks")
    app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """fairbench: fairness benchmarks for medical vision-language models."""


@app.command()
def run(
    task: Annotated[str, typer.Option(help="Task name (see `fairbench ls tasks`).")] = "synth_cxr",
    model: Annotated[str, typer.Option(help="Model card name (see `fairbench ls models`).")] = "tinyclip",
    adapt: Annotated[str, typer.Option(help="Adaptation strategy (see `fairbench ls adapters`).")] = "zeroshot",
    seed: Annotated[int, typer.Option(help="Seed for everything random in this cell (0 to 2**32-1).")] = 0,
    out: OutOpt = Path("results"),
    data_root: DataRootOpt = None,
    eval_task: Annotated[str | None, typer.Option(
        help="Cross-dataset evaluation: train and select on --task, evaluate on this task's test split; the "
             "cell goes to OUT/eval-task/model/adapt@task/seedN.", rich_help_panel="Data and weights")] = None,
    eval_data_root: EvalDataRootOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    adapt_arg: AdaptArgOpt = None,
    model_arg: ModelArgOpt = None,
    task_arg: TaskArgOpt = None,
    n_boot: NBootOpt = None,
    tasks_dir: TasksDirOpt = None,
    allow_download: AllowDownloadOpt = False,
    allow_skip_unreadable: AllowSkipUnreadableOpt = False,
    image_cache: ImageCacheOpt = "auto",
    select_on: Annotated[str | None, typer.Option(
        "--select-on", help="Split that selects the epoch of a trainable adapter: val (default) or test "
        "(FairCLIP's published protocol: warned, recorded, test metrics biased). Same as --adapt-arg select_on=.",
        rich_help_panel="Training")] = None,
    embedding_cache: EmbeddingCacheOpt = True,
    precision: PrecisionOpt = "fp32",
    variants: VariantsOpt = None,
) -> None:
    """Run one cell (task x model x adapter x seed) and print its fairness summary.

    With no options: the embedded default, the SYNTHETIC task synth_cxr with the tiny CLIP model, zero-shot.
    """
    from fairbench.pipeline import RunConfig, run_cell
    from fairbench.report.summary import print_summary
    from fairbench.results import check_seed

    check_seed(seed, "--seed")
    adapt_args = parse_kv(adapt_arg or [], "--adapt-arg")
    if select_on is not None:
        adapt_args["select_on"] = select_on
    cfg = RunConfig(task=task, model=model, adapt=adapt, seed=seed, out=out, data_root=data_root,
                    weights=weights, device=device, overwrite=overwrite, tasks_dirs=tuple(tasks_dir or ()),
                    n_boot=n_boot, adapt_args=adapt_args,
                    allow_skip_unreadable=allow_skip_unreadable, image_cache=image_cache,
                    embedding_cache=embedding_cache, precision=precision,
                    model_args=parse_kv(model_arg or [], "--model-arg"),
                    task_args=parse_kv(task_arg or [], "--task-arg"),
                    eval_task=eval_task, eval_data_root=eval_data_root, variants=split_names(variants))
    from fairbench.models.weights import allow_downloads

    with allow_downloads(allow_download):
        result = run_cell(cfg)
    if result.skipped:
        err_console.print(f"cell already complete, skipped (use --overwrite to recompute): {result.path}",
                          markup=False, soft_wrap=True)
    print_summary(result.metrics, result.path)


class ListWhat(str, Enum):
    models = "models"
    adapters = "adapters"
    tasks = "tasks"
    metrics = "metrics"


@app.command()
def embed(
    model: Annotated[str, typer.Option(help="Model card name (see `fairbench ls models`).")],
    task: Annotated[str, typer.Option(help="Task name (see `fairbench ls tasks`).")],
    out: Annotated[Path, typer.Option(help="The parquet file to write.")],
    split: Annotated[list[str] | None, typer.Option(
        "--split", help="Split to embed, repeatable (default: every split of the task).")] = None,
    weights: WeightsOpt = None,
    model_arg: ModelArgOpt = None,
    data_root: DataRootOpt = None,
    tasks_dir: TasksDirOpt = None,
    device: DeviceOpt = "auto",
    allow_download: AllowDownloadOpt = False,
    embedding_cache: EmbeddingCacheOpt = True,
) -> None:
    """Write a model's image embeddings of a task's samples to parquet (one row per sample; attributes, labels,
    and the class prompts' text embeddings and provenance in the file's metadata; see docs/models.md)."""
    from fairbench.embed import EmbedConfig
    from fairbench.embed import embed as run_embed
    from fairbench.models.weights import allow_downloads

    cfg = EmbedConfig(task=task, model=model, out=out, splits=tuple(split or ()), weights=weights,
                      model_args=parse_kv(model_arg or [], "--model-arg"), data_root=data_root,
                      tasks_dirs=tuple(tasks_dir or ()), device=device, embedding_cache=embedding_cache)
    with allow_downloads(allow_download):
        meta = run_embed(cfg)
    cache = meta["embedding_cache"]
    events = ", ".join(f"{e['split']} {e['event']}" for e in cache.get("events", []))
    err_console.print(f"wrote {out} (embedding cache: {events if cache.get('enabled') else 'off'})",
                      markup=False, soft_wrap=True)


@app.command()
def leakage(
    model: Annotated[str, typer.Option(help="Model card name (see `fairbench ls models`).")],
    task: Annotated[str, typer.Option(help="Task name (see `fairbench ls tasks`).")],
    weights: WeightsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation folds and the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples of the test split.")] = 1000,
    features: Annotated[str, typer.Option(help="embedding (the image embedding) or feature (the probe "
                                          "feature the linear probe reads).")] = "embedding",
    train_max: Annotated[int | None, typer.Option(help="Fit on at most this many training images (a fixed "
                                                   "random subsample; a cell uses 500) beside the val split. "
                                                   "Default: all of them.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
    model_arg: ModelArgOpt = None,
    data_root: DataRootOpt = None,
    tasks_dir: TasksDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Attribute leakage: how well a logistic regression on the frozen image embeddings (fit on train+val, or on
    val and a --train-max subsample of train; C by cross-validation) predicts each protected attribute on the test
    split; AUC with a bootstrap interval, beside chance 0.5 (docs/metrics.md)."""
    from fairbench.analyses.leakage import fit_description
    from fairbench.leakage_command import leakage_table, run_leakage
    from fairbench.results import write_json

    if n_boot < 0:
        raise FairbenchError(f"--n-boot must be >= 0, got {n_boot}")
    if train_max is not None and train_max < 2:
        raise FairbenchError(f"--train-max must be >= 2, got {train_max}")
    doc = run_leakage(task=task, model=model, weights=weights, seed=seed, n_boot=n_boot, features=features,
                      train_max=train_max,
                      tasks_dirs=tuple(tasks_dir or ()), data_root=data_root, device=device,
                      model_args=parse_kv(model_arg or [], "--model-arg"))
    typer.echo(f"attribute leakage: {doc['model']} on {doc['task']} ({features}, fitted on "
               f"{fit_description(doc['leakage'])}, {n_boot} bootstrap resamples)")
    typer.echo(leakage_table(doc))
    if out is not None:
        write_json(out, doc)
        err_console.print(f"wrote {out}", markup=False, soft_wrap=True)


@app.command("ls")
def ls_(what: Annotated[ListWhat, typer.Argument(help="What to list.")],
        tasks_dir: TasksDirOpt = None) -> None:
    """List registered models, adapters, tasks or metrics."""
    from fairbench.report.listing import list_things

    list_things(what.value, tasks_dirs=tuple(tasks_dir or ()))


@app.command()
def validate(tasks_dir: TasksDirOpt = None) -> None:
    """Check that every task card and model card parses and resolves (nothing runs)."""
    from fairbench.report.listing import validate_all

    problems = validate_all(tasks_dirs=tuple(tasks_dir or ()))
    if problems:
        for p in problems:
            err_console.print(f"error: {p}", markup=False, soft_wrap=True)
        raise typer.Exit(code=1)


@app.command()
def metrics(
    predictions: Annotated[Path, typer.Argument(help="A predictions.parquet written by `fairbench run`.")],
    task: Annotated[str | None, typer.Option(
        help="Task card for classes, attributes and evaluation settings (default: from the metrics.json "
             "beside the file).")] = None,
    n_boot: NBootOpt = None,
    seed: Annotated[int | None, typer.Option(
        help="Bootstrap seed, 0 to 2**32-1 (default: the cell's seed from the metrics.json beside the file, else 0).")]
        = None,
    out: Annotated[Path | None, typer.Option(help="Write the metrics JSON here (default: print it).")] = None,
    tasks_dir: TasksDirOpt = None,
    variants: VariantsOpt = None,
) -> None:
    """Recompute metrics from a predictions file alone (the same function `run` uses)."""
    from fairbench.report.recompute import recompute
    from fairbench.results import check_seed

    if seed is not None:
        check_seed(seed, "--seed")
    recompute(predictions, task=task, n_boot=n_boot, seed=seed, out=out, tasks_dirs=tuple(tasks_dir or ()),
              variants=split_names(variants) or None)


@app.command()
def power(
    task: Annotated[str, typer.Option(help="Task card name or path.")],
    n_test: Annotated[int | None, typer.Option(
        help="Plan for N evaluated samples with the task's group shares and prevalences (default: the split's size).")]
        = None,
    auc: Annotated[float, typer.Option(help="Planning AUC of the better group, in (0.5, 1).")] = 0.8,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder (real tasks).")] = None,
    tasks_dir: TasksDirOpt = None,
) -> None:
    """Before anything runs: the smallest AUC gap, DPD and DEOdds the task's test groups could detect (80% power,
    two-sided alpha 0.05; docs/metrics.md, "Statistical power")."""
    from fairbench.analyses.power import plan_power
    from fairbench.data.task import get_task
    from fairbench.report.summary import print_power_plan

    plan = plan_power(get_task(task, tuple(tasks_dir or ())), data_root=data_root, n_test=n_test, auc=auc)
    print_power_plan(plan)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Cell A (the reference): a cell folder, predictions.parquet, metrics.json "
                                      "or a folder of seed<N> cells.")],
    b: Annotated[Path, typer.Argument(help="Cell B, of the same task and evaluated on the same samples.")],
    task: Annotated[str | None, typer.Option(
        help="Task card (default: from the cells' metrics.json).")] = None,
    n_boot: NBootOpt = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed (0 to 2**32-1).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the full comparison as JSON here.")] = None,
    tasks_dir: TasksDirOpt = None,
) -> None:
    """Paired comparison B − A on the same test samples: every metric with a paired bootstrap interval and
    p-value, DeLong's test for the AUCs; folders of seeds are paired seed by seed."""
    from fairbench.compare import compare as run_compare
    from fairbench.report.comparison import print_comparison
    from fairbench.results import check_seed, write_json

    check_seed(seed, "--seed")
    result = run_compare(a, b, task=task, n_boot=n_boot, seed=seed, tasks_dirs=tuple(tasks_dir or ()))
    if out is not None:
        write_json(out, result)
    print_comparison(result)
    if out is not None:
        err_console.print(f"wrote {out}", markup=False, soft_wrap=True)


@app.command()
def sweep(
    sweep_file: Annotated[Path | None, typer.Argument(
        help="YAML sweep file (grid, run options, executor; see docs/sweeps.md). Options given here override it.")]
        = None,
    tasks: Annotated[list[str] | None, typer.Option(
        "--tasks", help="Task names, comma-separated or repeated.", rich_help_panel="Grid")] = None,
    eval_tasks: Annotated[list[str] | None, typer.Option(
        "--eval-tasks", help="Cross-dataset evaluation: also evaluate every task's trained adapters on these "
        "tasks (zero-shot left out), comma-separated or repeated.", rich_help_panel="Grid")] = None,
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="Model card names, comma-separated or repeated.", rich_help_panel="Grid")] = None,
    adapts: Annotated[list[str] | None, typer.Option(
        "--adapts", help="Adapters, comma-separated or repeated.", rich_help_panel="Grid")] = None,
    seeds: Annotated[list[str] | None, typer.Option(
        "--seeds", help="Seeds: 0,1,2 or a range 0-4 (default 0).", rich_help_panel="Grid")] = None,
    executor: Annotated[str | None, typer.Option(
        help="Where cells run: local (worker processes), submitit (a SLURM job array) or ray (Ray tasks).",
        rich_help_panel="Executor")] = None,
    workers: Annotated[int | None, typer.Option(
        min=0, help="local: worker processes (default 1; 0 = in this process).", rich_help_panel="Executor")]
        = None,
    executor_arg: Annotated[list[str] | None, typer.Option(
        "--executor-arg", help="Executor option KEY=VALUE, repeatable (submitit: cluster, timeout_min, "
        "slurm_partition, ...; ray: address, num_cpus, num_gpus, ...).", rich_help_panel="Executor")] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Torch threads per cell (default: CPUs / workers for local, the task's CPUs otherwise).",
        rich_help_panel="Executor")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT); without it the "
        "sweep starts a Ray instance of its own, even where one is running.", rich_help_panel="Executor")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and their status; run nothing.")]
        = False,
    out: OutOpt = None,
    data_root: DataRootOpt = None,
    eval_data_root: EvalDataRootOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    n_boot: NBootOpt = None,
    tasks_dir: TasksDirOpt = None,
    adapt_arg: AdaptArgOpt = None,
    model_arg: ModelArgOpt = None,
    task_arg: TaskArgOpt = None,
    overwrite: SweepOverwriteOpt = None,
    allow_skip_unreadable: SweepAllowSkipUnreadableOpt = None,
    image_cache: ImageCacheOpt = None,
    precision: PrecisionOpt = None,
    variants: VariantsOpt = None,
) -> None:
    """Run a grid of cells (tasks x models x adapters x seeds); complete cells are skipped.

    A failing cell is recorded in its error.json and does not stop the others; rerun to finish what is missing.
    Exit code 1 if any cell failed.
    """
    from fairbench.sweep.command import build_spec, sweep_command

    options = {"out": out, "data_root": data_root, "eval_data_root": eval_data_root, "weights": weights,
               "device": device, "n_boot": n_boot,
               "overwrite": overwrite, "allow_skip_unreadable": allow_skip_unreadable, "image_cache": image_cache,
               "precision": precision, "variants": split_names(variants) or None,
               "model_args": parse_kv(model_arg, "--model-arg") if model_arg else None,
               "task_args": parse_kv(task_arg, "--task-arg") if task_arg else None}
    spec = build_spec(sweep_file, tasks=tasks, models=models, adapts=adapts, seeds=seeds, executor=executor,
                      workers=workers, executor_args=parse_kv(executor_arg or [], "--executor-arg"),
                      threads=threads, tasks_dirs=tasks_dir, adapt_args=adapt_arg, options=options,
                      ray_address=ray_address, eval_tasks=eval_tasks)
    report = sweep_command(spec, dry_run=dry_run)
    if report is not None and not report.ok:
        raise typer.Exit(code=1)


@app.command()
def leaderboard(
    results: Annotated[list[Path] | None, typer.Argument(
        help="Results roots, cell folders or metrics.json files (default: results).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the pages, one <task>.md per task.")] = Path("leaderboards"),
    reported: Annotated[Path | None, typer.Option(
        help="Folder of curated reported numbers (<task>.yaml; default: the ones shipped with fairbench).")] = None,
    include_reported_only: Annotated[bool, typer.Option(
        "--include-reported-only", help="Also write pages for tasks that have reported numbers but no results.")]
        = False,
    tasks_dir: TasksDirOpt = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="ADAPTER", help="Also write, per task and protected attribute, a 'versus ADAPTER' "
        "table: each (model, adapter) against the same model's ADAPTER cells, paired on the same test samples "
        "(paired bootstrap; t interval across 2+ seeds), with Holm-adjusted p-values.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace pages in OUT that were generated from other results (by default nothing is "
        "written and the pages that would be replaced are listed).")] = False,
    variants: Annotated[list[str] | None, typer.Option(
        "--variants", help="Also write, per task and protected attribute, a table of another benchmark's metric "
        "definitions under its own names, from the cells' variants.<name> (fairmedfm: overall-auc, worst-auc, "
        "auc-gap, eod, ...; record them with `run`/`sweep`/`metrics --variants`).")] = None,
) -> None:
    """Write one markdown leaderboard per task from result cells (deterministic: same results, same bytes).

    A page in OUT generated from other results (the committed leaderboards included) is replaced only with
    --overwrite.
    """
    from fairbench.report.leaderboard import write_leaderboards

    written, col = write_leaderboards(results or [Path("results")], out, reported_dir=reported,
                                      include_reported_only=include_reported_only, tasks_dirs=tuple(tasks_dir or ()),
                                      reference=reference, overwrite=overwrite,
                                      variants=split_names(variants))
    for path, why in col.problems:
        err_console.print(f"skipped {path}: {why}", style="yellow", markup=False, soft_wrap=True)
    for path in written:
        err_console.print(f"wrote {path}", markup=False, soft_wrap=True)


@app.command()
def plot(
    results: Annotated[list[Path], typer.Argument(help="Result cells, results roots or metrics.json files.")],
    out: Annotated[Path, typer.Option(help="Folder for the figures (OUT/task/model/adapt/seedN/<attribute>.png).")]
        = Path("plots"),
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", help="png and/or svg; repeatable (default both).")] = None,
    attribute: Annotated[list[str] | None, typer.Option(
        "--attribute", help="Only these protected attributes; repeatable (default all).")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="ADAPTER", help="Also draw, per task, a forest plot of each (model, adapter) against "
        "the same model's ADAPTER cells, paired on the same test samples (OUT/task/versus_ADAPTER.png).")] = None,
    tasks_dir: TasksDirOpt = None,
) -> None:
    """Draw figures (PNG and SVG) from result cells.

    Per cell and protected attribute: group metrics with CIs, ROC and reliability curves per group. Per cell and
    analysis it recorded (OUT/.../analysis_<name>.png): underdiagnosis by group, reliability with ECE, slope and
    intercept per group, attribute leakage, power (MDE beside the observed gap), prompt sensitivity. Per task:
    a fairness-utility scatter across cells, and with --reference a forest plot of paired differences.
    """
    from fairbench.report.plot_run import plot_results

    written, col, problems = plot_results(results, out, formats=tuple(fmt or ("png", "svg")),
                                          attributes=tuple(attribute or ()) or None, reference=reference,
                                          tasks_dirs=tuple(tasks_dir or ()))
    for path, why in col.problems:
        err_console.print(f"skipped {path}: {why}", style="yellow", markup=False, soft_wrap=True)
    for p in problems:
        err_console.print(f"warning: {p}", style="yellow", markup=False, soft_wrap=True)
    err_console.print(f"wrote {len(written)} figure files under {out}", markup=False, soft_wrap=True)


@app.command()
def report(
    results: Annotated[list[Path] | None, typer.Argument(
        help="Results roots, cell folders or metrics.json files (default: results).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the site (OUT/index.html opens from disk).")] = Path("site"),
    figures: Annotated[Path | None, typer.Option(
        help="A folder written by `fairbench plot` whose SVG figures are reused (default: only the ones an earlier "
             "report drew into OUT/figures); missing or stale figures are drawn once into OUT/figures.")] = None,
    reported: Annotated[Path | None, typer.Option(
        help="Folder of curated reported numbers (<task>.yaml; default: the ones shipped with fairbench).")] = None,
    tasks_dir: TasksDirOpt = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="ADAPTER", help="Also show, per task, the 'versus ADAPTER' tables and forest plot "
        "of paired differences (as `fairbench leaderboard --reference`).")] = None,
) -> None:
    """Write a static HTML site of result cells: an index of tasks, a sortable leaderboard page per task and a
    page per cell with every metric, group table, figure and its provenance (no server, no network)."""
    from fairbench.report.html import write_site

    site = write_site(results or [Path("results")], out, figures=figures, reported_dir=reported,
                      tasks_dirs=tuple(tasks_dir or ()), reference=reference)
    for path, why in site.collection.problems:
        err_console.print(f"skipped {path}: {why}", style="yellow", markup=False, soft_wrap=True)
    for p in site.problems:
        err_console.print(f"warning: {p}", style="yellow", markup=False, soft_wrap=True)
    err_console.print(f"wrote {len(site.pages)} pages under {out} (figures: {site.figures_reused} reused, "
                      f"{site.figures_drawn} drawn); open {Path(out) / 'index.html'}", markup=False, soft_wrap=True)


@app.command()
def check(
    results: Annotated[list[Path], typer.Argument(help="Results roots, cell folders or metrics.json files.")],
    baseline: Annotated[Path, typer.Option(help="Baseline JSON to compare with (written by --update).")],
    tolerance: Annotated[list[str] | None, typer.Option(
        "--tolerance", help="Absolute tolerance in metrics.json units: NUMBER (the default, 0.01) or "
        "METRIC=NUMBER (e.g. auc=0.005, es_auc=0.02); repeatable. Overrides the baseline's tolerances.")] = None,
    update: Annotated[bool, typer.Option("--update", help="Write the baseline from the results instead.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also list moves within tolerance.")] = False,
    two_sided: Annotated[bool, typer.Option(
        "--two-sided/--one-sided", help="Two-sided (default): any move beyond tolerance fails, improvements "
        "included. One-sided: only moves the bad way fail; improvements are listed and pass.")] = True,
) -> None:
    """Compare results with a baseline; exit 1 on a move beyond tolerance.

    Direction-aware: an AUC falling or a fairness gap growing beyond tolerance is a regression and fails, and so
    does a missing or unreadable cell; an improvement beyond tolerance fails too (two-sided, the default) or is
    reported and passes (--one-sided). --update writes the baseline.
    """
    from fairbench.report.check import run_check

    code = run_check(results, baseline, tolerance=tolerance or (), update=update, verbose=verbose,
                     two_sided=two_sided)
    if code:
        raise typer.Exit(code=code)


_mount_subcommands()


_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def _switch_given_a_value(argv: list[str]) -> None:
    """``--overwrite true``: click would answer "unexpected extra argument"; say that a switch takes no value."""
    import typer.main

    node: Any = typer.main.get_command(app)
    for word in argv:
        node = getattr(node, "commands", {}).get(word, node)
    switches = {o: p for p in getattr(node, "params", []) if getattr(p, "is_flag", False)
                for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    for i, word in enumerate(argv):
        flag, eq, value = word.partition("=")
        if not eq:
            flag, value = word, argv[i + 1] if i + 1 < len(argv) else ""
        if flag in switches and value.lower() in _BOOL_WORDS and (eq or not Path(value).exists()):
            p = switches[flag]
            names = " or ".join(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
            raise FairbenchError(f"{flag} is an on/off switch and takes no value (got '{value}'): write {names}, "
                                 f"without a value")


#: width of --help written to a pipe or file (rich would use 80 columns there)
PIPED_HELP_WIDTH = 200


def _piped_help_width() -> None:
    """--help written to a pipe or a file, with neither $COLUMNS nor $TERMINAL_WIDTH set, is laid out
    :data:`PIPED_HELP_WIDTH` columns wide: at rich's default 80, help texts wrap mid-sentence in a narrow column
    and long option names (``--allow-skip-unreadable/--no-allow-skip-unreadable``) are cut with an ellipsis."""
    import os

    from typer import rich_utils

    if rich_utils.MAX_WIDTH is None and not os.environ.get("COLUMNS") and not sys.stdout.isatty():
        rich_utils.MAX_WIDTH = PIPED_HELP_WIDTH


def main() -> None:
    try:
        _piped_help_width()
        _switch_given_a_value(sys.argv[1:])
        app()
    except FairbenchError as exc:
        err_console.print(f"error: {exc}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; completed cells are kept, rerun to finish the rest", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
