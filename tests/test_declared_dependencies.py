"""Every third-party package that app/ imports is a declared dependency in pyproject.toml.

A package that only arrives as another's dependency (scipy through scikit-learn, starlette
through FastAPI) can be dropped or moved a major version by that package's next release.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def imported_modules(root: Path) -> dict[str, set[str]]:
    """Top-level module name -> the files (relative to root) that import it; absolute imports only."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


def test_every_imported_package_is_declared():
    declared = {_normal(Requirement(r).name) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = packages_distributions()
    undeclared = []
    for module, files in imported_modules(ROOT / "app").items():
        if module in sys.stdlib_module_names or module == "app" or module == "__future__":
            continue
        dists = {_normal(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared.append(f"{module} ({', '.join(sorted(dists))}) in {', '.join(sorted(files))}")
    assert undeclared == []


def test_the_scan_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from scipy.stats import rankdata\n    import numpy.linalg\n")
    assert imported_modules(tmp_path) == {"scipy": {"m.py"}, "numpy": {"m.py"}}
