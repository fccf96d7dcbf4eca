"""Jinja2 with autoescape and named blocks: one template serves a page and its HTMX fragments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks

from app import __version__
from app.datasets import tagsets
from app.models import JobStatus, Role, RunStatus, Split
from app.web.deps import ensure_csrf_token, is_htmx

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATE_DIR = ROOT / "templates"


def when(value: datetime | None) -> str:
    """A timestamp the way pages show it: minutes, in UTC."""
    if value is None:
        return "never"
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def label_text(label: str | None, multilabel: bool = False) -> str:
    """A sample's label as plain text: its class; on a multi-label dataset its tag set as
    "cat, dog", "(none)" for the empty set; "unlabelled" for no label. The `label` macro of
    templates/_labels.html draws the same as chips; this is its form for titles, buttons and
    notices."""
    if label is None:
        return "unlabelled"
    if not multilabel:
        return label
    return ", ".join(tagsets.to_list(label)) or "(none)"


def _sentence(text: str) -> str:
    """A service message as a sentence on a page: capital first letter, full stop."""
    text = str(text).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _page_context(request: Request) -> dict[str, Any]:
    # Every page carries the CSRF token (the meta tag and every form), so every visitor gets one.
    return {"csrf_token": ensure_csrf_token(request), "asset_version": __version__}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["sentence"] = _sentence
    env.filters["tags"] = tagsets.to_list  # a canonical tag-set string as its list of classes
    env.globals["label_text"] = label_text
    # Templates compare states with the enums, never with bare strings.
    env.globals.update(JobStatus=JobStatus, RunStatus=RunStatus, Split=Split, Role=Role)
    return env


templates = Jinja2Blocks(env=_environment(), context_processors=[_page_context])


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    block: str | None = None,
    status_code: int = 200,
) -> Response:
    """The whole page, or only `block` when HTMX asked (the same template either way)."""
    headers = {"Cache-Control": "no-store", "Vary": "HX-Request"}
    kwargs = {"block_name": block} if block and is_htmx(request) else {}
    return templates.TemplateResponse(
        request, name, dict(context), status_code=status_code, headers=headers, **kwargs
    )
