"""The command line's shared option definitions: every option that more than one command takes is declared once
here (``run``, ``sweep``, ``embed``, ``metrics``, ``compare``, ``leaderboard``, ``plot``, ``report``, ``ls``,
``validate`` and the ``tasks``/``data`` subcommands), so their names, help texts, panels and checks never drift.

A sweep's run options are ``None`` when not given (the sweep file's value, else the run default, applies), so the
shared types are ``Optional`` and each command sets its own default; switches that a sweep must be able to turn
off (``--overwrite/--no-overwrite``) come in a run form and a sweep form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
           "AdaptArgOpt",
           "AllowDownloadOpt",
           "AllowSkipUnreadableOpt",
           "DataRootOpt",
           "DeviceOpt",
           "EmbeddingCacheOpt",
           "EvalDataRootOpt",
           "ImageCacheOpt",
           "ModelArgOpt",
           "NBootOpt",
           "OutOpt",
           "OverwriteOpt",
           "PrecisionOpt",
           "SweepAllowSkipUnreadableOpt",
           "SweepOverwriteOpt",
           "TaskArgOpt",
           "TasksDirOpt",
           "VariantsOpt",
           "WeightsOpt",
           "split_names",
]

DATA = "Data and weights"
TRAINING = "Training"

TasksDirOpt = Annotated[list[Path] | None, typer.Option(
    "--tasks-dir", help="Extra folder of task folders (<dir>/<task>/<task>.yaml); repeatable.",
    rich_help_panel="Tasks")]
VariantsOpt = Annotated[list[str] | None, typer.Option(
    "--variants", help="Also write another benchmark's metric definitions under variants.<name> in metrics.json "
    "(binary tasks; comma-separated or repeated): fairmedfm (its best-F1 threshold is chosen on the evaluated "
    "labels). A complete cell that lacks one gets it from its predictions.", rich_help_panel="Metrics")]
NBootOpt = Annotated[int | None, typer.Option(
    "--n-boot", min=0, help="Bootstrap resamples for confidence intervals (0 = none; default: the task card's).",
    rich_help_panel="Metrics")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Results root (default results); a cell goes to OUT/task/model/adapt/seedN.")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
DataRootOpt = Annotated[Path | None, typer.Option(
    "--data-root", help="Dataset folder in its upstream layout (real tasks only).", rich_help_panel=DATA)]
EvalDataRootOpt = Annotated[Path | None, typer.Option(
    "--eval-data-root", help="Dataset folder of the evaluated task of a cross-dataset cell (--eval-task; default: "
    "--data-root).", rich_help_panel=DATA)]
WeightsOpt = Annotated[str | None, typer.Option(
    "--weights", help="Weights source overriding the card's: a file, local-dir:PATH, hf-hub:ORG/REPO, or random.",
    rich_help_panel=DATA)]
ModelArgOpt = Annotated[list[str] | None, typer.Option(
    "--model-arg", help="Model argument KEY=VALUE for a generic model (open_clip: arch=NAME); repeatable. "
    "Recorded in metrics.json and the config hash.", rich_help_panel=DATA)]
TaskArgOpt = Annotated[list[str] | None, typer.Option(
    "--task-arg", help="Override a task card's dataset option KEY=VALUE where its loader allows it, dotted keys "
    "for nested options (synth_cxr: n.train, n.val, n.test, image_size; e.g. n.test=10000); repeatable. "
    "Recorded in metrics.json (task.args) and the config hash.", rich_help_panel=DATA)]
AdaptArgOpt = Annotated[list[str] | None, typer.Option(
    "--adapt-arg", help="Adapter parameter KEY=VALUE; repeatable (see `fairbench ls adapters`). In a sweep, "
    "ADAPTER.KEY=VALUE sets it for that adapter only.", rich_help_panel=TRAINING)]
ImageCacheOpt = Annotated[str | None, typer.Option(
    "--image-cache", help="Preprocessed-image cache for real datasets: auto (the model's own resize/pad/crop, "
    "exact), off, or a size in pixels (a shared bicubic shrink, approximate).", rich_help_panel=DATA)]
PrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", help="Frozen-encoder inference precision: fp32, bf16 (autocast; CPU and CUDA) or fp16 (CUDA). "
    "Recorded with its measured effect in metrics.json.", rich_help_panel=TRAINING)]
AllowDownloadOpt = Annotated[bool, typer.Option(
    "--allow-download", help="Let an hf-hub: weights source missing from the local Hugging Face cache be "
    "downloaded (never while HF_HUB_OFFLINE is set).", rich_help_panel=DATA)]
EmbeddingCacheOpt = Annotated[bool, typer.Option(
    "--embedding-cache/--no-embedding-cache", help="Reuse (and store) frozen image embeddings across runs "
    "(zeroshot, linear_probe, mlp and the other frozen-encoder adapters).", rich_help_panel=TRAINING)]
# switches: a run turns them on; a sweep may also turn off what its file turns on
_OVERWRITE = "Recompute a cell that is already complete"
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help=_OVERWRITE + ".")]
SweepOverwriteOpt = Annotated[bool | None, typer.Option(
    "--overwrite/--no-overwrite", help=_OVERWRITE + " (default: the sweep file's, else no).")]
_SKIP = ("Leave out samples whose image is missing or unreadable (each is listed in metrics.json under "
         "data.skipped) instead of stopping")
AllowSkipUnreadableOpt = Annotated[bool, typer.Option(
    "--allow-skip-unreadable", help=_SKIP + ".", rich_help_panel=DATA)]
SweepAllowSkipUnreadableOpt = Annotated[bool | None, typer.Option(
    "--allow-skip-unreadable/--no-allow-skip-unreadable", help=_SKIP + " (default: the sweep file's, else no).",
    rich_help_panel=DATA)]


def split_names(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: the names of a repeatable option that also takes comma lists."""
    return [p.strip() for v in values or [] for p in str(v).split(",") if p.strip()]
