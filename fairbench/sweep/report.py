"""What a sweep did: its cells, those already complete, and each run cell's outcome. Apart from the driver so
that the progress display (which the driver imports) can take a report without importing the driver."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairbench.sweep.grid import Cell
from fairbench.sweep.worker import Outcome

__all__ = ["SweepReport"]


@dataclass
class SweepReport:
    cells: list[Cell]
    already_complete: list[Cell] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def busy(self) -> list[Outcome]:
        """Cells another process was computing (their lock was held): not run by this sweep."""
        return [o for o in self.outcomes if o.status == "busy"]

    @property
    def ran(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "done"]

    @property
    def remaining(self) -> int:
        return len(self.cells) - len(self.already_complete) - len(self.outcomes)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy and self.remaining == 0
