"""`fairbench tasks ...` and `fairbench data ...` subcommands (mounted by :mod:`fairbench.cli`)."""

from __future__ import annotations

import filecmp
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fairbench.errors import CardError, FairbenchError
from fairbench.options import TasksDirOpt
from fairbench.progress import stdout_console

__all__ = ["data_app", "tasks_app"]

tasks_app = typer.Typer(help="Build and inspect task definitions.", no_args_is_help=True)
data_app = typer.Typer(help="Check datasets on disk against their task cards.", no_args_is_help=True)



@tasks_app.command("build")
def build(
    task: Annotated[str, typer.Argument(help="Task whose committed split file to regenerate (e.g. nih6x200).")],
    metadata: Annotated[Path | None, typer.Option(
        help="The dataset's metadata file (NIH: Data_Entry_2017_v2020.csv[.gz]); default: the copy in "
             "torchxrayvision.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write the split file into this folder instead of the task folder.")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Build into a temporary folder and compare byte for byte with the committed file; "
                        "exit 1 when they differ.")] = False,
    tasks_dir: TasksDirOpt = None,
) -> None:
    """Regenerate a task's committed split file from the dataset metadata, following the card's recipe."""
    from fairbench.data.task import get_task

    card = get_task(task, tuple(tasks_dir or ()))
    loader = card.loader()
    if not hasattr(loader, "build_split_file"):
        raise CardError(f"task '{card.name}' (loader '{card.dataset_loader}') has no split file to build")
    console = stdout_console()
    if check:
        committed = loader.split_file_path()
        with tempfile.TemporaryDirectory() as tmp:
            built = loader.build_split_file(card, metadata=metadata, out_dir=Path(tmp))
            same = committed.is_file() and filecmp.cmp(built, committed, shallow=False)
            if not same:
                if out is not None:
                    Path(out).mkdir(parents=True, exist_ok=True)
                    shutil.copy(built, Path(out) / built.name)
                console.print(f"differs: {committed} is not what the recipe builds"
                              + (f" (rebuilt copy in {out})" if out is not None else ""), markup=False)
                raise typer.Exit(code=1)
        console.print(f"up to date: {committed}", markup=False)
        return
    path = loader.build_split_file(card, metadata=metadata, out_dir=out)
    _print_build_summary(console, path)


@tasks_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Name of the new task (lower-case letters, digits, _).")],
    csv: Annotated[Path, typer.Option("--csv", help="The manifest: a CSV (or .tsv, .parquet) with one row per "
                                                   "image.")],
    image: Annotated[str, typer.Option(help="Column holding each image's path (relative paths are read from the "
                                            "manifest's folder).")],
    label: Annotated[str, typer.Option(help="Column holding each image's label.")],
    attributes: Annotated[str | None, typer.Option(
        help="Comma-separated protected attribute columns, e.g. sex,age.")] = None,
    patient: Annotated[str | None, typer.Option(help="Column holding the patient id (keeps a patient's images "
                                                        "in one split).")] = None,
    split: Annotated[str | None, typer.Option(help="Column holding train/val/test (default: a salted hash of "
                                                      "the patient id, 70/10/20).")] = None,
    out: Annotated[Path, typer.Option(help="Folder of task folders to write into; use it as --tasks-dir.")]
        = Path("tasks"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing card.")] = False,
) -> None:
    """Write a task card for a folder of images described by a CSV (the csv loader): no code needed."""
    from fairbench.data.newtask import write_task_card

    made = write_task_card(name, csv, image=image, label=label,
                           attributes=(attributes or "").split(",") if attributes else None,
                           patient=patient, split=split, out_dir=out, overwrite=overwrite)
    console = stdout_console()
    console.print(f"wrote {made.path}: {made.n_rows} images, classes {', '.join(made.classes)}", markup=False)
    for attr, what in made.attributes.items():
        console.print(f"  attribute {attr}: {what}", markup=False)
    for note in made.notes:
        console.print(f"  note: {note}", markup=False)
    if made.missing_files:
        console.print(f"  warning: {made.missing_files} of {made.n_rows} image files not found "
                      f"(`fairbench data check` lists them)", markup=False)
    console.print("next: read and edit the card, then\n"
                  f"  fairbench data check --task {name} --tasks-dir {out}\n"
                  f"  fairbench run --task {name} --tasks-dir {out} --model tinyclip", markup=False)


def _print_build_summary(console: Console, path: Path) -> None:
    import pandas as pd

    df = pd.read_csv(path, dtype=str)
    counts = df.groupby("split").size().to_dict() if "split" in df.columns else {}
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    console.print(f"wrote {path}: {len(df)} samples ({parts})", markup=False)


@data_app.command("check")
def check(
    task: Annotated[str, typer.Option(help="Task whose data to check (see `fairbench ls tasks`).")],
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder in its upstream layout.")] = None,
    split: Annotated[list[str] | None, typer.Option(help="Check only this split (train, val, test); "
                                                            "repeatable.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Check headers and checksums without decoding every image fully.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
    tasks_dir: TasksDirOpt = None,
) -> None:
    """Counts per class and group, unusable images and values outside the card's encoding; exit 1 on problems."""
    from fairbench.data.check import check_task, render_report
    from fairbench.data.task import SPLITS, get_task

    card = get_task(task, tuple(tasks_dir or ()))
    for s in split or []:
        if s not in SPLITS:
            raise FairbenchError(f"--split {s!r}: expected one of {', '.join(SPLITS)}")
    report = check_task(card, data_root, splits=list(split) if split else None, quick=quick)
    render_report(report, stdout_console())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.as_dict(), indent=1), encoding="utf-8")
    if not report.ok:
        raise typer.Exit(code=1)


@data_app.command("cache")
def cache(clear: Annotated[bool, typer.Option("--clear", help="Delete every entry.")] = False) -> None:
    """List (or clear) the preprocessed-image cache (under $FAIRBENCH_CACHE/images)."""
    from rich.table import Table

    from fairbench.data.image_cache import cache_entries, image_cache_dir

    console = stdout_console()
    entries = cache_entries()
    if clear:
        for e in entries:
            shutil.rmtree(e["path"], ignore_errors=True)
        console.print(f"removed {len(entries)} entries from {image_cache_dir()}", markup=False)
        return
    table = Table(title=str(image_cache_dir()), title_justify="left")
    for col in ("entry", "images", "size px", "MB", "unreadable", "built"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["path"].name + (" (partial)" if e["partial"] else ""), str(e["n"]), str(e["size"]),
                      f"{e['bytes'] / 1e6:.1f}", str(e["unreadable"]), str(e["built_at"]))
    console.print(table)
