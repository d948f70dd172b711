"""Result cells on disk: the layout, atomic writes and provenance (:mod:`~fairbench.results.store`), the one
predictions reader (:mod:`~fairbench.results.predictions`), and the one cell type and finder
(:mod:`~fairbench.results.cells`)."""

from fairbench.results.cells import CELL_MARKERS, ResultCell, find_cell_dirs, is_cell_dir, resolve_cells, resolve_side
from fairbench.results.predictions import read_predictions
from fairbench.results.store import (
                                     ERROR,
                                     MAX_SEED,
                                     METRICS,
                                     PREDICTIONS,
                                     SCHEMA_VERSION,
                                     adapt_folder,
                                     atomic_write,
                                     cell_dir,
                                     check_seed,
                                     ensure_writable,
                                     is_complete,
                                     now_iso,
                                     provenance,
                                     read_metrics,
                                     write_json,
)

__all__ = ["CELL_MARKERS", "ERROR", "MAX_SEED", "METRICS", "PREDICTIONS", "SCHEMA_VERSION", "ResultCell",
           "adapt_folder", "atomic_write", "cell_dir", "check_seed", "ensure_writable", "find_cell_dirs", "is_cell_dir",
           "is_complete", "now_iso", "provenance", "read_metrics", "read_predictions", "resolve_cells",
           "resolve_side", "write_json"]
