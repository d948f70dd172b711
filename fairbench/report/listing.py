"""`fairbench ls` and `fairbench validate`."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from fairbench.errors import FairbenchError
from fairbench.progress import stdout_console

__all__ = ["list_things", "validate_all"]

#: Prose columns (descriptions, parameter lists) wrap at this width; names, classes and paths never wrap.
PROSE_WIDTH = 60


def list_things(what: str, *, tasks_dirs: tuple[Path, ...] = ()) -> None:
    console = stdout_console()
    table = Table(show_lines=False)
    if what == "models":
        from fairbench.models.base import get_model_card, model_names
        from fairbench.models.status import weights_status

        for col in ("model", "family", "weights"):
            table.add_column(col, overflow="fold")  # names and paths: folded on a narrow terminal, never cut
        table.add_column("description", max_width=PROSE_WIDTH)
        for name in model_names():
            card = get_model_card(name)
            table.add_row(name, card.family, weights_status(card), card.description)
    elif what == "adapters":
        from fairbench.adapters.base import ADAPTERS

        table.add_column("adapter", overflow="fold")
        for col in ("parameters (defaults)", "description"):
            table.add_column(col, max_width=PROSE_WIDTH)
        for name in ADAPTERS.names():
            cls = ADAPTERS.get(name)
            params = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
            table.add_row(name, params, cls.description)
    elif what == "tasks":
        from fairbench.data.task import discover_tasks, get_task

        for col in ("task", "version", "classes", "attributes"):
            table.add_column(col, overflow="fold")
        table.add_column("description", max_width=PROSE_WIDTH)
        for name in sorted(discover_tasks(tasks_dirs)):
            try:
                t = get_task(name, tasks_dirs)
            except FairbenchError as exc:
                table.add_row(name, "?", "", "", f"[red]invalid: {exc}[/red]")
                continue
            desc = ("[SYNTHETIC] " if t.synthetic else "") + t.description
            table.add_row(name, t.version, ", ".join(t.classes), ", ".join(t.attributes), desc)
    elif what == "metrics":
        from fairbench.metrics import METRICS

        for col in ("metric", "higher is better"):
            table.add_column(col, overflow="fold")
        table.add_column("description", max_width=PROSE_WIDTH)
        for name in METRICS.names():
            spec = METRICS.get(name)
            hib = getattr(spec, "higher_is_better", None)
            table.add_row(name, "" if hib is None else ("yes" if hib else "no"),
                          getattr(spec, "description", "") or "")
    console.print(table)


def validate_all(*, tasks_dirs: tuple[Path, ...] = ()) -> list[str]:
    """Parse every task and model card and resolve every name they refer to; return the problems."""
    from fairbench.data.task import discover_tasks, load_task_card
    from fairbench.metrics import METRICS
    from fairbench.models.base import cards_dir, load_model_card

    problems: list[str] = []
    ok = 0
    for name, path in sorted(discover_tasks(tasks_dirs).items()):
        try:
            card = load_task_card(path)
            card.loader()  # validates dataset options
            for m in card.metrics:
                if m not in METRICS:
                    raise FairbenchError(f"{path}: field 'metrics' names {METRICS.unknown_message(m)}")
            ok += 1
        except FairbenchError as exc:
            problems.append(str(exc))
    for path in sorted(cards_dir().glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        try:
            load_model_card(path)
            ok += 1
        except FairbenchError as exc:
            problems.append(str(exc))
    Console(stderr=True, highlight=False).print(f"{ok} cards valid, {len(problems)} with problems")
    return problems
