"""Signing a test client in through the login form, the way a browser does."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_from(html: str) -> str:
    """The CSRF token a page carries in its meta tag."""
    match = _META.search(html)
    assert match, "page has no csrf-token meta tag"
    return match.group(1)


def login(client: TestClient, username: str, password: str = "password-123") -> str:
    """Sign in with the form; returns the session's (rotated) CSRF token."""
    token = csrf_from(client.get("/login").text)
    r = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": ""},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf_from(client.get("/account").text)


def htmx(csrf: str | None = None) -> dict[str, str]:
    """The headers HTMX sends (with the CSRF header that static/js/app.js adds)."""
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/datasets"}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    return headers
