"""Every route the app registers is either public on purpose or guarded by a role, and the
guard holds: no credentials is 401 (or a redirect to /login), a role below the required one
is 403, and an admin is never turned away by the auth layer.

The routes come from create_app, so routes other modules add later are covered without
touching this file; a new public route must be added to PUBLIC, deliberately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts
from sqlalchemy import update

from app.auth.deps import RoleRequired
from app.auth.service import create_token, create_user
from app.models import Role, User

# (method, path) of the routes that need no user; "*" stands for a mount's every method.
PUBLIC = {
    ("GET", "/api/v1/health"),
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),  # checks the CSRF token itself when a user is signed in
    ("GET", "/docs"),  # the API docs: public by default (CURATE_API_DOCS, docs/rest.md)
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
    ("*", "/static"),
}
BODY_METHODS = {"POST", "PUT", "PATCH"}
ROLE_DENIED = "this needs the"


@dataclass(frozen=True)
class RouteCase:
    method: str
    path: str
    role: Role | None

    @property
    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", "1", self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def required_role(dependant) -> Role | None:
    """The highest RoleRequired anywhere in a route's dependency tree."""
    roles, stack = [], [dependant] if dependant is not None else []
    while stack:
        d = stack.pop()
        if isinstance(d.call, RoleRequired):
            roles.append(d.call.role)
        stack.extend(d.dependencies)
    return max(roles, key=lambda r: r.rank, default=None)


def route_cases(app) -> list[RouteCase]:
    cases = []
    for ctx in iter_route_contexts(app.routes):
        # The effective route's dependant includes dependencies added by include_router.
        dependant = getattr(ctx, "dependant", None)
        methods = set(ctx.methods or {"*"})
        if methods != {"HEAD"}:
            methods.discard("HEAD")
        role = required_role(dependant)
        cases.extend(RouteCase(m, ctx.path, role) for m in sorted(methods))
    return cases


def protected(app) -> list[RouteCase]:
    return [c for c in route_cases(app) if c.role is not None]


class Actors:
    """One user per role; each request gets a freshly minted token, so a route that revokes
    tokens or changes users (path parameter 1) cannot disturb the next request."""

    def __init__(self, db) -> None:
        self.db = db
        # The lowest ids belong to a bystander, so "/.../1" never names an actor.
        create_user(db, "bystander", Role.annotator.value, "password-123")
        self.users = {r: create_user(db, f"matrix-{r.value}", r.value, "password-123")[0] for r in Role}
        db.commit()

    def headers(self, role: Role) -> dict[str, str]:
        user = self.users[role]
        self.db.execute(update(User).where(User.id == user.id).values(role=role.value, is_active=True))
        _, token = create_token(self.db, user, "matrix")
        self.db.commit()
        return {"Authorization": f"Bearer {token}"}


def call(client, case: RouteCase, headers: dict[str, str] | None = None):
    kwargs = {"json": {}} if case.method in BODY_METHODS else {}
    return client.request(case.method, case.url, headers=headers or {}, follow_redirects=False, **kwargs)


def test_every_route_is_guarded_by_a_role_or_public_on_purpose(app):
    cases = route_cases(app)
    unguarded = {(c.method, c.path) for c in cases if c.role is None}
    guarded = {(c.method, c.path) for c in cases if c.role is not None}
    assert not unguarded - PUBLIC, f"routes without a role dependency: {sorted(unguarded - PUBLIC)}"
    assert not PUBLIC & guarded, f"PUBLIC lists routes that need a role: {sorted(PUBLIC & guarded)}"
    assert not PUBLIC - unguarded, f"PUBLIC lists routes the app no longer has: {sorted(PUBLIC - unguarded)}"


def test_the_walker_reads_the_roles_of_known_routes(app):
    roles = {(c.method, c.path): c.role for c in route_cases(app)}
    assert roles[("GET", "/datasets")] is Role.annotator
    assert roles[("POST", "/datasets")] is Role.engineer
    assert roles[("POST", "/api/v1/datasets")] is Role.engineer
    assert roles[("GET", "/api/v1/me")] is Role.annotator
    assert roles[("PATCH", "/api/v1/users/{user_id}")] is Role.admin
    assert roles[("GET", "/admin/users")] is Role.admin
    assert roles[("GET", "/api/v1/health")] is None
    assert {r for r in roles.values() if r} == set(Role), "every role guards some route"


def test_no_credentials_is_401_or_a_redirect_to_login(app, client):
    failures = []
    for case in protected(app):
        r = call(client, case)
        if r.status_code != 401:
            failures.append(f"{case}: {r.status_code} without credentials")
        if case.method == "GET" and not case.path.startswith("/api/"):
            r = call(client, case, {"Accept": "text/html"})
            if r.status_code != 303 or not r.headers["location"].startswith("/login"):
                failures.append(f"{case}: browser got {r.status_code}, not a redirect to /login")
    assert not failures, "\n".join(failures)


def test_a_role_below_the_required_one_is_403(app, client, db):
    actors = Actors(db)
    failures, checked = [], 0
    for case in protected(app):
        for role in Role:
            if role.rank >= case.role.rank:
                continue
            r = call(client, case, actors.headers(role))
            checked += 1
            detail = r.json().get("detail", "") if r.headers.get("content-type") == "application/json" else ""
            if r.status_code != 403 or not str(detail).startswith(ROLE_DENIED):
                failures.append(f"{case} as {role.value}: {r.status_code} {r.text[:120]}")
    assert checked, "no route needs more than the annotator role?"
    assert not failures, "\n".join(failures)


def test_admins_are_never_refused_by_the_auth_layer(app, client, db):
    actors = Actors(db)
    failures = []
    for case in protected(app):
        r = call(client, case, actors.headers(Role.admin))
        # Handlers may answer 404 or 422 for the made-up ids and bodies; only auth matters here.
        if r.status_code in (401, 403):
            failures.append(f"{case} as admin: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)


def test_every_role_reaches_what_it_is_allowed(app, client, db):
    actors = Actors(db)
    failures = []
    for case in protected(app):
        for role in Role:
            if role.rank < case.role.rank or role is Role.admin:
                continue
            r = call(client, case, actors.headers(role))
            if r.status_code in (401, 403):
                failures.append(f"{case} as {role.value}: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)
