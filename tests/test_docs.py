"""The documentation stays true to the repository.

- No tracked file (.py, .md, .html, .toml) cites a Markdown document that is not there: a
  moved or deleted page leaves no dangling pointer in a docstring, a comment, an OpenAPI
  description or another page.
- docs/rest.md names every job kind and every train job parameter, so a kind or a recipe
  knob added to the code cannot go undocumented.
"""

from __future__ import annotations

import io
import posixpath
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path


from app.jobs.registry import known_kinds
from app.training.recipe import Recipe

REPO = Path(__file__).resolve().parent.parent
SCANNED = (".py", ".md", ".html", ".toml")
# A relative path ending in .md that stands on its own (not the tail of a longer path, so an
# absolute path such as /tmp/report.md, which names no file of the repository, never matches).
MD_PATH = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w-][\w./-]*\.md)(?![\w-])")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I)
PYTHON_STRINGS = {tokenize.STRING} | {getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def _git_files(*args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def python_prose(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of a Python file's comments and prose strings (docstrings, descriptions).

    A string without whitespace is a name the code uses (a report file it writes, say), not a
    citation, and is left out.
    """
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (tok.type in PYTHON_STRINGS and re.search(r"\s", tok.string)):
            yield tok.start[0], tok.string


def citations(path: str, text: str) -> Iterator[tuple[int, str]]:
    """(line, cited .md path) for every citation in a file's text."""
    chunks = python_prose(text) if path.endswith(".py") else [(1, text)]
    for first_line, chunk in chunks:
        chunk = URL.sub(lambda m: " " * len(m.group()), chunk)
        for match in MD_PATH.finditer(chunk):
            yield first_line + chunk.count("\n", 0, match.start()), match.group(1)


def resolves(citing: str, cited: str, existing: set[str]) -> bool:
    """Whether `cited`, relative to the citing file's folder or to the repository root, exists.

    A benchmark, bench/<name>.py, may name the report it writes under bench/results/ (the same
    name, in Markdown) before a run of it has been committed.
    """
    candidates = {posixpath.normpath(posixpath.join(posixpath.dirname(citing), cited)), posixpath.normpath(cited)}
    if any(c in existing for c in candidates):
        return True
    bench = re.fullmatch(r"bench/([^/]+)\.py", citing)
    return bench is not None and f"bench/results/{bench.group(1)}.md" in candidates


def dangling_citations(files: dict[str, str], existing: set[str]) -> list[str]:
    """"path:line: name" for each citation in `files` (path -> text) of a file not in `existing`."""
    return [
        f"{path}:{line}: {cited}"
        for path, text in sorted(files.items())
        for line, cited in citations(path, text)
        if not resolves(path, cited, existing)
    ]


def test_no_tracked_file_cites_a_missing_document():
    existing = set(_git_files("--cached", "--others", "--exclude-standard"))
    files = {
        name: (REPO / name).read_text(encoding="utf-8")
        for name in _git_files("--cached")
        if name.endswith(SCANNED) and (REPO / name).is_file()
    }
    assert files, "no tracked files found"
    dangling = dangling_citations(files, existing)
    assert not dangling, "these cite documents that are not in the repository:\n" + "\n".join(dangling)


def test_dangling_citations_are_found_and_other_mentions_are_not():
    md = ".md"  # every name below is built, so that this file cites nothing itself
    files = {
        "app/x.py": f'"""Scores as gone{md} defines them."""\nREPORT = "gone{md}"  # see docs/gone{md}\n',
        f"docs/a{md}": f"See [b](b{md}), [c](./gone{md}), https://example.org/gone{md} and /tmp/gone{md}.\n",
        "bench/speed.py": f'"""Writes bench/results/speed{md} and bench/results/other{md}."""\n',
        "templates/t.html": f"<p>\n<a>gone{md}</a></p>",
    }
    existing = {f"docs/b{md}"}
    assert dangling_citations(files, existing) == [
        f"app/x.py:1: gone{md}",
        f"app/x.py:2: docs/gone{md}",
        f"bench/speed.py:1: bench/results/other{md}",
        f"docs/a{md}:1: ./gone{md}",
        f"templates/t.html:2: gone{md}",
    ]


def _backticked(text: str, names: list[str]) -> list[str]:
    return [name for name in names if f"`{name}`" not in text]


def test_rest_doc_names_every_job_kind():
    text = (REPO / "docs" / "rest.md").read_text(encoding="utf-8")
    kinds = known_kinds()
    assert kinds
    assert not _backticked(text, kinds), f"docs/rest.md does not document job kinds {_backticked(text, kinds)}"


def test_rest_doc_names_every_train_parameter():
    text = (REPO / "docs" / "rest.md").read_text(encoding="utf-8")
    fields = list(Recipe.model_fields)
    missing = _backticked(text, fields)
    assert not missing, f"docs/rest.md does not document train job parameters {missing}"
