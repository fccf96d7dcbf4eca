"""The pinned constraints must satisfy the ranges in pyproject.toml, or `make install` fails."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_pinned_dependency_fits_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    conflicts = []
    for text in requirements:
        req = Requirement(text)
        pinned = pins.get(req.name.lower().replace("_", "-"))
        assert pinned is not None, f"{req.name} is not pinned in constraints.txt"
        if not req.specifier.contains(pinned, prereleases=True):
            conflicts.append(f"{text} vs pinned {pinned}")
    assert conflicts == []
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")


def test_no_gpl_licensed_runtime_dependency():
    from importlib.metadata import PackageNotFoundError, metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    offenders = []
    for text in project["dependencies"]:
        name = Requirement(text).name
        try:
            meta = metadata(name)
        except PackageNotFoundError:
            continue
        # The declared licence: its SPDX expression, else its classifiers, else the License field,
        # which some wheels fill with the text of every library they bundle (scipy's names
        # libgfortran's GPL with the GCC runtime exception), not the package's own licence.
        classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License")]
        licence = meta.get("License-Expression") or " ".join(classifiers) or meta.get("License") or ""
        # LGPL (psycopg) is allowed; GPL and AGPL are not.
        if ("GPL" in licence.replace("LGPL", "")) or "Affero" in licence:
            offenders.append(f"{name}: {licence}")
    assert offenders == []
