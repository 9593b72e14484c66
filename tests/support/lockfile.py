"""``requirements/lockfile.py`` loaded as a module: it is a script beside the locks, not a
package of the project, and the tests call its functions directly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

PATH = Path(__file__).resolve().parents[2] / "requirements" / "lockfile.py"

if TYPE_CHECKING:  # mypy reads requirements/lockfile.py as the top-level module `lockfile`
    import lockfile
else:
    _spec = importlib.util.spec_from_file_location("lockfile", PATH)
    assert _spec is not None and _spec.loader is not None
    lockfile = importlib.util.module_from_spec(_spec)
    sys.modules["lockfile"] = lockfile  # dataclasses look their module up as the class is built
    _spec.loader.exec_module(lockfile)

__all__ = ["PATH", "lockfile"]
