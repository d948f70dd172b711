"""docs/architecture.md's map of the code matches the tree: every module is named (by its path, or by a folder or
glob the map names for it) and every path the map names exists."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def _named_paths() -> list[str]:
    return sorted({m for m in re.findall(r"`(fairbench/[^`\s]*)`", DOC.read_text(encoding="utf-8"))})


def test_every_module_is_on_the_map():
    named = _named_paths()
    missing = []
    for path in sorted((ROOT / "fairbench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py") or "/_tasks/" in rel:
            continue
        covered = any(rel == n or (n.endswith("/") and rel.startswith(n)) or fnmatch.fnmatch(rel, n)
                      for n in named)
        if not covered:
            missing.append(rel)
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_path_on_the_map_exists():
    absent = [n for n in _named_paths() if not any(ch in n for ch in "*?[")
              and not (ROOT / n.rstrip("/")).exists()]
    globs = [n for n in _named_paths() if any(ch in n for ch in "*?[")]
    absent += [g for g in globs if not list(ROOT.glob(g))]
    assert not absent, f"docs/architecture.md names paths that do not exist: {absent}"
