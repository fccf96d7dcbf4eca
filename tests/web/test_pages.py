"""The HTML shell: CSP, no inline scripts, assets from /static, navigation by role."""

import re

import pytest

from app.middleware import CSP
from tests.web.session import login

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=", re.I)
ASSET = re.compile(r'<(?:script|link|img)\b[^>]*\s(?:src|href)="([^"]+)"', re.I)


def _pages(client, db, admin_account):
    login(client, admin_account.user.username)
    return {path: client.get(path) for path in ("/datasets", "/account", "/admin/users")}


def test_csp_forbids_inline_scripts(client):
    r = client.get("/login")
    csp = r.headers["content-security-policy"]
    assert csp == CSP
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "'self'" in script_src


def test_pages_carry_the_csp_and_no_inline_script_or_style(client, db, admin):
    pages = {"/login": client.get("/login")}
    pages.update(_pages(client, db, admin))
    for path, r in pages.items():
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"], path
        assert r.headers["x-frame-options"] == "DENY"
        scripts = SCRIPT.findall(r.text)
        assert scripts, path
        for attrs, body in scripts:
            assert 'src="/static/' in attrs and not body.strip(), f"inline script on {path}"
        assert not INLINE_HANDLER.search(r.text), f"inline event handler on {path}"
        assert not INLINE_STYLE.search(r.text), f"inline style on {path}"


def test_every_asset_comes_from_static_and_exists(client, db, admin):
    r = client.get("/login")
    assets = set(ASSET.findall(r.text))
    assert {a.split("?")[0] for a in assets} >= {
        "/static/css/app.css", "/static/js/app.js", "/static/vendor/htmx.min.js", "/static/favicon.svg"}
    for url in assets:
        assert url.startswith("/static/"), url
        assert client.get(url).status_code == 200, url


def test_htmx_requests_carry_the_csrf_header():
    from pathlib import Path

    js = (Path(__file__).resolve().parents[2] / "static/js/app.js").read_text()
    assert 'addEventListener("htmx:configRequest"' in js
    assert 'headers["X-CSRF-Token"]' in js and 'meta[name="csrf-token"]' in js


def test_vendored_htmx_is_the_pinned_package():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pinned = json.loads((root / "package.json").read_text())["devDependencies"]["htmx.org"]
    locked = json.loads((root / "package-lock.json").read_text())["packages"]["node_modules/htmx.org"]["version"]
    assert pinned == locked
    vendored = (root / "static/vendor/htmx.min.js").read_text()
    assert f'version:"{locked}"' in vendored


def test_pages_are_not_cached(client, engineer):
    login(client, engineer.user.username)
    assert client.get("/datasets").headers["cache-control"] == "no-store"


@pytest.mark.parametrize("role, sees_admin", [("annotator", False), ("engineer", False), ("admin", True)])
def test_the_header_shows_the_user_their_role_and_the_right_nav(client, db, role, sees_admin):
    from tests.builders import make_user

    acc = make_user(db, role)
    login(client, acc.user.username)
    html = client.get("/account").text
    assert f'<span class="who-name">{acc.user.username}</span>' in html
    assert f'<span class="badge badge-{role}">{role}</span>' in html
    assert '<a href="/datasets"' in html and '<a href="/account" aria-current="page">' in html
    assert ('href="/admin/users"' in html) is sees_admin
    assert 'action="/logout"' in html


def test_user_content_is_escaped(client, db, admin):
    from tests.builders import make_dataset

    make_dataset(db, name="<script>alert(1)</script>")
    login(client, admin.user.username)
    html = client.get("/datasets").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
