"""Import files in a fresh process and report how far each pushed the peak resident memory.

    python -m tests.datasets.memory_probe WORK_DIR FILE [FILE ...]

Run from the repository root. Each FILE is imported into a new image dataset of a SQLite
database under WORK_DIR, inside a transaction that is rolled back. Before each import the
kernel's peak-RSS mark (VmHWM) is reset to the current RSS, so the peak read afterwards is
that import's own, not left over from an earlier one or from the process that started this
one. Prints one JSON object per file: idle and peak RSS in bytes, seconds, the ZIP entries
opened, and the refusal (ImportFailed.to_dict()) or the unexpected exception.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
import zipfile
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main(work: Path, files: list[Path]) -> None:
    from sqlalchemy.orm import Session

    from app.config import Settings
    from app.datasets import importers
    from app.db import get_engine
    from app.models import Base, Dataset

    url = f"sqlite:///{work / 'probe.db'}"
    settings = Settings(database_url=url, data_dir=work / "data", _env_file=None)
    engine = get_engine(url)
    Base.metadata.create_all(engine)
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def counting_open(self, name, *args, **kwargs):
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    zipfile.ZipFile.open = counting_open
    for n, path in enumerate(files):
        with Session(engine) as session, open(path, "rb") as fh:
            ds = Dataset(name=f"probe{n}", task="image", classes=[], settings={}, label_version=0)
            session.add(ds)
            session.flush()
            opened.clear()
            report: dict = {"file": path.name}
            gc.collect()
            _reset_peak()
            report["idle"] = _status("VmRSS")
            start = time.monotonic()
            try:
                importers.import_file(session, ds, fh, path.name, settings=settings)
            except importers.ImportFailed as exc:
                report["refused"] = exc.to_dict()
            except Exception:  # reported, so that the test shows it
                report["exception"] = traceback.format_exc()
            report["seconds"] = time.monotonic() - start
            report["peak"] = _status("VmHWM")
            report["opened"] = list(opened)
            session.rollback()
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
