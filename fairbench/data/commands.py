"""`fairbench tasks ...` and `fairbench data ...` subcommands (mounted by :mod:`fairbench.cli`)."""

from __future__ import annotations

import typer

__all__ = ["tasks_app", "data_app"]

tasks_app = typer.Typer(help="Build and inspect task definitions.", no_args_is_help=True)
data_app = typer.Typer(help="Check datasets on disk against their task cards.", no_args_is_help=True)
