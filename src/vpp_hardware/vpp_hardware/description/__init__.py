"""Robot descriptions written by this project (URDF and MJCF), installed as package data.

:func:`description_path` resolves a file inside this package, e.g.
``description_path("xhand/xhand_right.urdf")``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DESCRIPTION_DIR", "description_path"]

DESCRIPTION_DIR = Path(__file__).resolve().parent


def description_path(relative: str) -> Path:
    """Absolute path of a description file; raises FileNotFoundError naming what exists."""
    path = DESCRIPTION_DIR / relative
    if not path.is_file():
        existing = sorted(str(p.relative_to(DESCRIPTION_DIR)) for p in DESCRIPTION_DIR.rglob("*.*")
                          if p.suffix in (".urdf", ".xml"))
        raise FileNotFoundError(f"no description file {relative!r}; have {existing}")
    return path
