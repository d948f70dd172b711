"""Hatch build hook: bake the git commit a wheel (or sdist) is built from into ``fairbench/_build_info.py``.

An installed (non-editable) fairbench has no ``.git`` beside it, so ``fairbench.results`` cannot ask git which
commit it runs; it reads this file instead. The file is generated into a temporary folder and added to the
archive (the source tree is not modified). Editable installs read git live and get no file. Building from an
sdist (no ``.git``) keeps the file the sdist already carries.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "fairbench/_build_info.py"


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it), or (None, None) outside a git checkout."""
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, dirty


class BuildInfoHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        root = Path(self.root)
        commit, dirty = git_state(root)
        if commit is None:
            return  # an sdist's own _build_info.py (if any) is packaged as a normal file
        folder = Path(tempfile.mkdtemp(prefix="fairbench-build-info-"))
        path = folder / "_build_info.py"
        path.write_text('"""Written by hatch_build.py when this package was built; do not edit."""\n\n'
                        f"BUILD_COMMIT = {commit!r}\nBUILD_DIRTY = {dirty!r}\n", encoding="utf-8")
        build_data.setdefault("force_include", {})[str(path)] = TARGET
