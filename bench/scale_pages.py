"""The scale bench's pages and load: the web pages a signed-in browser opens, timed; and
fifty annotators at human pace (bench/annotators.py's annotator loop) while a prober times
the listings and GET /api/v1/health beside them.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import annotators
import httpx
from scale_env import ADMIN, PASSWORD, get_ok, repeat

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
HTMX = {"HX-Request": "true"}


# --------------------------------------------------------------------------- pages


def browser(base: str, username: str = ADMIN, password: str = PASSWORD) -> httpx.Client:
    """A client signed in through the login form, as a browser is (session cookie)."""
    client = httpx.Client(base_url=base, timeout=600)
    page = get_ok(client, "/login")
    token = CSRF.search(page.text)
    if token is None:
        raise RuntimeError("the login page has no csrf-token meta tag")
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token.group(1), "next": ""})
    if r.status_code != 303:
        raise RuntimeError(f"sign-in failed: {r.status_code} {r.text[:300]}")
    return client


@dataclass
class Page:
    name: str
    url: str
    headers: dict = field(default_factory=dict)
    api: bool = False  # through the API token client, not the browser
    times: list[float] = field(default_factory=list)


def pages(ds_id: int, run_ids: list[int], job_id: int | None) -> list[Page]:
    """The pages to time; the runs comparison needs the latest run and the one before it, if any."""
    run, base = (run_ids[-1], run_ids[-2]) if len(run_ids) > 1 else (run_ids[-1], None)
    compare = f"/datasets/{ds_id}?run={run}" + (f"&base={base}" if base else "")
    out = [
        Page("login form (baseline: a template, no query)", "/login"),
        Page("datasets list", "/datasets"),
        Page("dataset overview (with advice and health)", f"/datasets/{ds_id}"),
        Page("runs comparison panel (HTMX)", compare, HTMX),
        Page("advisor (GET /api/v1/datasets/{id}/advice)", f"/api/v1/datasets/{ds_id}/advice", api=True),
        Page("history", f"/datasets/{ds_id}/history"),
        Page("jobs", f"/datasets/{ds_id}/jobs"),
        Page("review, one by one", f"/datasets/{ds_id}/review"),
        Page("review, grid", f"/datasets/{ds_id}/review/grid"),
    ]
    if job_id is not None:
        out.insert(7, Page("job", f"/jobs/{job_id}"))
    return out


def time_pages(page_client: httpx.Client, api_client: httpx.Client, items: list[Page], reps: int, budget_s: float) -> None:
    for page in items:
        client = api_client if page.api else page_client
        get_ok(client, page.url, headers=page.headers)
        page.times = repeat(lambda c=client, p=page: get_ok(c, p.url, headers=p.headers), reps, budget_s)
        print(f"  {page.name}: {len(page.times)} x, max {max(page.times) * 1000:.0f} ms", flush=True)


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    phase: annotators.Phase
    listing: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _prober(http: httpx.AsyncClient, ds_id: int, probes: list[dict], load: Load, seconds: float, pause: float) -> None:
    """One more user: a listing, then the health check, then a short pause, until the end."""
    rng = random.Random(7)
    deadline = time.perf_counter() + seconds
    url = f"/api/v1/datasets/{ds_id}/samples"
    while time.perf_counter() < deadline:
        for target, path, params in (("listing", url, rng.choice(probes)), ("health", "/api/v1/health", None)):
            t = time.perf_counter()
            r = await http.get(path, params=params)
            (load.listing if target == "listing" else load.health).append(time.perf_counter() - t)
            if r.status_code != 200:
                load.errors.append(f"{path} {params}: {r.status_code} {r.text[:200]}")
            await asyncio.sleep(pause)


async def _run_load(base: str, ds_id: int, tokens: list[str], admin_token: str, probes: list[dict],
                    seconds: float, pause: float) -> Load:
    load = Load(annotators.Phase("human pace", "annotate", annotators.HUMAN, seconds))

    def client(token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120, verify=False)

    clients = [client(t) for t in tokens]
    probe = client(admin_token)
    try:
        await asyncio.gather(*(c.get("/api/v1/me") for c in [*clients, probe]))
        t = time.perf_counter()
        await asyncio.gather(
            _prober(probe, ds_id, probes, load, seconds, pause),
            *(annotators.annotator(i, c, ds_id, load.phase, 5, 1000 + i) for i, c in enumerate(clients)),
        )
        load.phase.wall = time.perf_counter() - t
    finally:
        await asyncio.gather(*(c.aclose() for c in [*clients, probe]))
    load.errors += load.phase.errors
    return load


def run_load(base: str, ds_id: int, tokens: list[str], admin_token: str, probes: list[dict], seconds: float,
             pause: float = 0.2) -> Load:
    """len(tokens) annotators at human pace (2-6 s a sample) for `seconds`, with the prober beside them."""
    return asyncio.run(_run_load(base, ds_id, tokens, admin_token, probes, seconds, pause))
