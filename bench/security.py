"""Attack a fresh Curate the way `make run` starts it, and write bench/results/security.md.

    .venv/bin/python bench/security.py [--quick] [--import-rows 600000] [--postgres-url URL]

Boots Curate as `make run` does (`curate init` on an empty data directory with no
CURATE_SECRET_KEY, then `curate serve` with its worker, SQLite), then runs each attack end
to end against it over HTTP and reports one row per check with its figure and whether it
held. A check that errors is a failed row; every row must pass. --quick shrinks the import
and the fuzzing so the whole run takes a couple of minutes.

The `%` round trip and the database-outage check also start a second and a third server:
one on a fresh Postgres database next to --postgres-url (skipped, and reported as not run,
when no Postgres answers there), one whose database does not answer at all.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit, free_port, machine, markdown_table, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "security.md"
WORK = ROOT / "bench" / "work" / "security"
ADMIN_PASSWORD = "bench-admin-" + uuid.uuid4().hex[:12]
OLD_PLACEHOLDER_KEY = "change-me-in-production"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
MIB = 1024 * 1024


@dataclass
class Row:
    check: str
    figure: str
    target: str
    passed: bool


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    data_dir: Path
    log: Path
    env: dict[str, str]

    def rss_mib(self) -> float:
        """The serving process's resident memory (uvicorn runs in the `curate serve` process)."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


@dataclass
class Bench:
    server: Server
    admin_token: str
    quick: bool
    rows: list[Row] = field(default_factory=list)

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.server.base, timeout=kw.pop("timeout", 120), **kw)

    @property
    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


# --------------------------------------------------------------------------- the server


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment `make run` gives Curate: nothing of ours but the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE_")}
    env.update({"CURATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def curate(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_server(env: dict[str, str], log: Path, *args: str) -> Server:
    port = free_port()
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"curate serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/api/v1/health", timeout=2).status_code in (200, 503):
                return Server(proc, base, Path(env["CURATE_DATA_DIR"]), log, env)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("curate serve did not answer within 120 s")


def stop(server: Server) -> int | None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            return server.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


def csrf_of(html: str) -> str:
    m = CSRF_META.search(html)
    if not m:
        raise RuntimeError("page has no CSRF token")
    return m.group(1)


def sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": ""})


def create_user(b: Bench, name: str, role: str = "annotator") -> tuple[str, str]:
    with b.http() as c:
        r = c.post("/api/v1/users", json={"username": name, "role": role}, headers=b.api)
        r.raise_for_status()
        return name, r.json()["password"]


def create_dataset(b: Bench, task: str, classes: list[str] | None = None, name: str | None = None) -> int:
    body = {"name": name or f"{task}-{uuid.uuid4().hex[:6]}", "task": task}
    if classes:
        body["classes"] = classes
    with b.http() as c:
        r = c.post("/api/v1/datasets", json=body, headers=b.api)
        r.raise_for_status()
        return r.json()["id"]


def upload(b: Bench, dataset_id: int, name: str, data: bytes | Path, timeout: float = 1800) -> httpx.Response:
    with b.http(timeout=timeout) as c:
        content = data.read_bytes() if isinstance(data, Path) else data
        return c.post(f"/api/v1/datasets/{dataset_id}/imports", files={"file": (name, content)}, headers=b.api)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


class RssSampler:
    """Samples the server's RSS every few milliseconds while a block runs."""

    def __init__(self, server: Server, every: float = 0.005) -> None:
        self.server, self.every = server, every
        self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> RssSampler:
        self.idle = self.server.rss_mib()
        self.peak = self.idle
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.server.rss_mib())
            except OSError:
                return
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()

    @property
    def rise(self) -> float:
        return self.peak - self.idle


# --------------------------------------------------------------------------- the checks


def check_secret_key(b: Bench) -> None:
    """A cookie signed with the old placeholder key is no session; the key file is 0600."""
    from itsdangerous import TimestampSigner

    signer = TimestampSigner(OLD_PLACEHOLDER_KEY)
    forged = []
    for payload in ({"user_id": 1}, {"user_id": 1, "sid": "x"}):
        data = base64.b64encode(json.dumps(payload).encode())
        forged.append(signer.sign(data).decode())
    statuses = []
    with b.http() as c:
        for cookie in forged:
            statuses.append(c.get("/api/v1/me", cookies={"curate_session": cookie}).status_code)
            statuses.append(c.get("/api/v1/tokens", cookies={"curate_session": cookie}).status_code)
    key = b.server.data_dir / "secret_key"
    mode = oct(key.stat().st_mode & 0o777) if key.exists() else "missing"
    weak = curate(clean_env(b.server.data_dir, CURATE_SECRET_KEY=OLD_PLACEHOLDER_KEY), "serve", "--host", "127.0.0.1",
                  "--port", str(free_port()), "--no-worker", timeout=60)
    refused = weak.returncode != 0 and "CURATE_SECRET_KEY" in (weak.stdout + weak.stderr)
    ok = set(statuses) == {401} and mode == "0o600" and refused
    b.rows.append(Row(
        "forged session cookie (make run defaults)",
        f"cookies signed with {OLD_PLACEHOLDER_KEY!r}: {sorted(set(statuses))} on /me and /tokens; generated key file "
        f"{mode}; the placeholder set explicitly on 127.0.0.1: {'refused' if refused else 'SERVED'}",
        "401; key file 0600; weak key refused on every bind", ok))


def _csv_rows(n: int, rng: np.random.Generator) -> bytes:
    classes = np.array(["alpha", "beta", "gamma", "delta"])
    x = rng.normal(size=(n, 4)).round(4)
    labels = classes[rng.integers(0, 4, n)]
    lines = ["id,label,f1,f2,f3,f4"]
    lines += [f"r{i},{labels[i]},{x[i, 0]},{x[i, 1]},{x[i, 2]},{x[i, 3]}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def check_lock_contention(b: Bench, rows: int, clients: int) -> None:
    """A large import while readers, sign-ins and relabels go on: nobody gets an error."""
    rng = np.random.default_rng(0)
    big = create_dataset(b, "tabular", name=f"big-{rows}")
    small = create_dataset(b, "tabular", name="relabel-target")
    assert upload(b, small, "small.csv", _csv_rows(200, rng)).status_code == 201
    with b.http() as c:
        samples = c.get(f"/api/v1/datasets/{small}/samples", params={"limit": 200}, headers=b.api).json()["items"]
    names = [create_user(b, f"reader{i}")[0:2] for i in range(clients // 4)]
    payload = _csv_rows(rows, rng)
    done = threading.Event()
    result: dict = {}

    def do_import() -> None:
        t0 = time.monotonic()
        r = upload(b, big, "big.csv", payload)
        result.update(status=r.status_code, seconds=time.monotonic() - t0, body=r.text[:300])
        done.set()

    latencies: dict[str, list[float]] = {"read": [], "sign-in": [], "relabel": []}
    errors: list[str] = []

    async def reader(i: int) -> None:
        async with httpx.AsyncClient(base_url=b.server.base, headers=b.api, timeout=120) as c:
            while not done.is_set():
                t0 = time.monotonic()
                path = (f"/api/v1/datasets/{small}/samples?limit=20&order=id", "/api/v1/datasets", f"/api/v1/datasets/{big}")[i % 3]
                r = await c.get(path)
                latencies["read"].append(time.monotonic() - t0)
                if r.status_code != 200:
                    errors.append(f"read {r.status_code}")

    async def signer(i: int) -> None:
        name, password = names[i % len(names)]
        while not done.is_set():
            async with httpx.AsyncClient(base_url=b.server.base, timeout=120) as c:
                t0 = time.monotonic()
                token = csrf_of((await c.get("/login")).text)
                r = await c.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": ""})
                latencies["sign-in"].append(time.monotonic() - t0)
                if r.status_code != 303:
                    errors.append(f"sign-in {r.status_code}")

    async def relabeler(i: int) -> None:
        async with httpx.AsyncClient(base_url=b.server.base, headers=b.api, timeout=120) as c:
            k = i
            while not done.is_set():
                s = samples[k % len(samples)]
                k += clients
                got = await c.get(f"/api/v1/samples/{s['id']}")
                if got.status_code != 200:
                    errors.append(f"relabel's read {got.status_code}: {got.text[:120]}")
                    continue
                cur = got.json()
                t0 = time.monotonic()
                new = "alpha" if cur["label"] != "alpha" else "beta"
                r = await c.patch(f"/api/v1/samples/{s['id']}", json={"label": new}, headers={"If-Match": str(cur["version"])})
                latencies["relabel"].append(time.monotonic() - t0)
                if r.status_code not in (200, 409):
                    errors.append(f"relabel {r.status_code}")

    async def load() -> None:
        tasks = []
        for i in range(clients):
            kind = ("read", "read", "sign-in", "relabel")[i % 4]
            tasks.append({"read": reader, "sign-in": signer, "relabel": relabeler}[kind](i))
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=do_import)
    thread.start()
    asyncio.run(load())
    thread.join()
    total = sum(len(v) for v in latencies.values())
    parts = ", ".join(f"{k} p99 {pct(v, 99) * 1000:.0f} ms (n={len(v)})" for k, v in latencies.items())
    ok = result.get("status") == 201 and not errors and all(latencies.values())
    b.rows.append(Row(
        "SQLite lock contention",
        f"{clients} clients during a {rows:,}-row import ({result.get('seconds', 0):.0f} s, {result.get('status')}): "
        f"{total:,} requests, {len(errors)} errors{' (' + ', '.join(sorted(set(errors))) + ')' if errors else ''}; {parts}",
        "0 errors; the import succeeds", ok))


def _bomb(entry: str, size: int, extra: dict[str, bytes] | None = None) -> bytes:
    """A ZIP whose entry `entry` is `size` zero bytes, deflated to about size/1000."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo(entry)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = b"\0" * (8 * MIB)
            for _ in range(size // len(chunk)):
                fh.write(chunk)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _labels_bomb(size: int) -> bytes:
    """labels.csv of `size` bytes of repetitive rows, deflated small, plus one real image."""
    buf = io.BytesIO()
    row = b"x.png,a,train\n"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("labels.csv")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            fh.write(b"image,label,split\n")
            chunk = row * (8 * MIB // len(row))
            for _ in range(size // len(chunk)):
                fh.write(chunk)
        zf.writestr("x.png", _png())
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8, 8), 128).save(out, "PNG")
    return out.getvalue()


def check_zip_bombs(b: Bench) -> None:
    ds = create_dataset(b, "image", ["a", "b"])
    for label, payload in (
        ("1 GiB image entry", _bomb("train/a/big.png", 1024 * MIB)),
        ("600 MiB labels.csv", _labels_bomb(600 * MIB)),
    ):
        with RssSampler(b.server) as rss:
            t0 = time.monotonic()
            r = upload(b, ds, "bomb.zip", payload)
            seconds = time.monotonic() - t0
        ok = r.status_code in (413, 422) and rss.rise < 200
        b.rows.append(Row(
            f"ZIP bomb: {label}",
            f"{len(payload) / MIB:.1f} MiB upload: {r.status_code} in {seconds:.1f} s; server RSS {rss.idle:.0f} -> "
            f"{rss.peak:.0f} MiB (+{rss.rise:.0f})",
            "4xx; peak within 200 MB of idle", ok))


def check_sessions(b: Bench) -> None:
    name, password = create_user(b, "session-user")
    outcomes = {}
    # 1. a cookie copied before logout
    with b.http() as c:
        assert sign_in(c, name, password).status_code == 303
        copied = dict(c.cookies)
        csrf = csrf_of(c.get("/account").text)
        c.post("/logout", data={"csrf_token": csrf})
    with b.http(cookies=copied) as thief:
        outcomes["after logout"] = thief.get("/api/v1/me").status_code
    # 2. a cookie copied before the password is changed in another browser
    with b.http() as c1, b.http() as c2:
        sign_in(c1, name, password)
        copied = dict(c1.cookies)
        sign_in(c2, name, password)
        csrf = csrf_of(c2.get("/account").text)
        new_password = password + "-changed"
        r = c2.post("/account/password", data={"csrf_token": csrf, "current_password": password,
                                                "new_password": new_password}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text[:300]
        password = new_password
        still = c2.get("/api/v1/me").status_code
    with b.http(cookies=copied) as thief:
        outcomes["after password change elsewhere"] = thief.get("/api/v1/me").status_code
    # 3. an admin signs the user out everywhere, then deactivates them
    with b.http() as c:
        sign_in(c, name, password)
        copied = dict(c.cookies)
    with b.http() as admin:
        user_id = next(u["id"] for u in admin.get("/api/v1/users", headers=b.api).json() if u["username"] == name)
        admin.delete(f"/api/v1/users/{user_id}/sessions", headers=b.api).raise_for_status()
    with b.http(cookies=copied) as thief:
        outcomes["after sign-out-everywhere"] = thief.get("/api/v1/me").status_code
    with b.http() as c:
        sign_in(c, name, password)
        copied = dict(c.cookies)
    with b.http() as admin:
        admin.patch(f"/api/v1/users/{user_id}", json={"is_active": False}, headers=b.api).raise_for_status()
    with b.http(cookies=copied) as thief:
        outcomes["after deactivation"] = thief.get("/api/v1/me").status_code
    ok = set(outcomes.values()) == {401} and still == 200
    b.rows.append(Row(
        "session reuse",
        "; ".join(f"copied cookie {k}: {v}" for k, v in outcomes.items()) + f"; the changing session itself: {still}",
        "401 each time; the session that changed the password stays signed in", ok))


def check_login_throttle(b: Bench, attempts: int) -> None:
    name, password = create_user(b, "throttle-target")
    statuses: list[int] = []
    retry_after = None
    with b.http() as c:
        for _ in range(attempts):
            r = sign_in(c, name, "wrong-" + uuid.uuid4().hex[:8])
            statuses.append(r.status_code)
            if r.status_code == 429 and retry_after is None:
                retry_after = r.headers.get("retry-after")
        right = sign_in(c, name, password).status_code
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    first_429 = statuses.index(429) + 1 if 429 in statuses else None
    ok = first_429 is not None and first_429 <= 20 and set(statuses[first_429 - 1:]) == {429} and retry_after and right == 429
    b.rows.append(Row(
        "login throttling",
        f"{attempts} wrong passwords in a row: {counts}, throttled from attempt {first_429} (Retry-After {retry_after} s); "
        f"the right password while throttled: {right}",
        "429 with Retry-After after a few failures, for the right password too", bool(ok)))


def check_login_timing_and_memory(b: Bench, concurrent: int) -> None:
    """Unknown users and wrong passwords cost the same; many sign-ins at once stay bounded in memory."""
    names = [create_user(b, f"timing{i}")[0] for i in range(4)]
    times: dict[str, list[float]] = {"unknown user": [], "wrong password": []}
    for i in range(12):
        for kind in times:
            with b.http() as c:
                token = csrf_of(c.get("/login").text)
                user = f"nobody-{uuid.uuid4().hex[:6]}" if kind == "unknown user" else names[i % len(names)]
                t0 = time.monotonic()
                c.post("/login", data={"username": user, "password": "wrong-password", "csrf_token": token, "next": ""})
                times[kind].append(time.monotonic() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    gap = abs(med["unknown user"] - med["wrong password"])
    # Different people at once, each from an address of their own (127.0.0.2, ...): the
    # throttle counts attempts in flight per account and per address.
    crowd_users = [create_user(b, f"crowd{i}") for i in range(concurrent)]

    async def crowd() -> list[int]:
        async def one(i: int) -> int:
            name, password = crowd_users[i]
            transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{2 + i}")
            async with httpx.AsyncClient(base_url=b.server.base, timeout=120, transport=transport) as c:
                token = csrf_of((await c.get("/login")).text)
                r = await c.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": ""})
                return r.status_code

        return await asyncio.gather(*[one(i) for i in range(concurrent)])

    with RssSampler(b.server) as rss:
        statuses = asyncio.run(crowd())
    ok = gap < max(0.25 * max(med.values()), 15) and rss.rise < 400 and set(statuses) <= {303, 503}
    b.rows.append(Row(
        "sign-in timing and memory",
        f"median unknown user {med['unknown user']:.0f} ms vs wrong password {med['wrong password']:.0f} ms; "
        f"{concurrent} people signing in at once: {dict((s, statuses.count(s)) for s in sorted(set(statuses)))}, "
        f"server RSS +{rss.rise:.0f} MiB",
        "timings alike; no 5xx but 503-with-retry; bounded memory", ok))


HOSTILE_FEATURE = '=HYPERLINK("http://evil.example","x")'


def check_header_injection(b: Bench) -> None:
    ds = create_dataset(b, "tabular", ["=cmd|' /C calc'!A0", "+ok"])
    csv_text = f'id,label,"{HOSTILE_FEATURE.replace(chr(34), chr(34) * 2)}",@sum\n' \
               "a1,=cmd|' /C calc'!A0,1,2\na2,+ok,3,4\n"
    r = upload(b, ds, "f.csv", csv_text.encode())
    assert r.status_code == 201, r.text
    with b.http() as c:
        export = c.get(f"/api/v1/datasets/{ds}/export", params={"format": "csv"}, headers=b.api).text
    import csv as csvmod

    cells = [cell for row in csvmod.reader(io.StringIO(export)) for cell in row]
    risky = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    ok = not risky
    b.rows.append(Row(
        "CSV formula injection",
        f"a feature named {HOSTILE_FEATURE!r}, a feature '@sum' and labels '=cmd…', '+ok': {len(cells)} exported cells, "
        f"{len(risky)} start like a formula" + (f" ({risky[:3]})" if risky else ""),
        "no cell, header included, starts with = + - @", ok))


def _percent_table() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": ["p1", "p2", "p3"],
        "label": ["50%", "a%%sb", "'=quoted"],
        "pct%%s": [0.5, 1.0, 1.5],
        "%": [1.0, 2.0, 3.0],
        "a%(b)s": [-1.0, 0.0, 1e-9],
        "naïve ∑ \"q\"": [3.0, 4.0, 5.0],
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def round_trip(base: str, headers: dict[str, str]) -> tuple[bool, str]:
    """Import the hostile table, export it in every format, import each export into a new dataset,
    and compare what is stored."""
    import pyarrow.parquet as pq

    with httpx.Client(base_url=base, headers=headers, timeout=300) as c:
        def new(name: str) -> int:
            r = c.post("/api/v1/datasets", json={"name": f"{name}-{uuid.uuid4().hex[:6]}", "task": "tabular"})
            r.raise_for_status()
            return r.json()["id"]

        def stored(ds: int) -> list[tuple]:
            items = c.get(f"/api/v1/datasets/{ds}/samples", params={"limit": 50, "order": "id"}).json()["items"]
            return sorted((s["external_id"], s["label"], json.dumps(s["features"], sort_keys=True)) for s in items)

        first = new("pct")
        r = c.post(f"/api/v1/datasets/{first}/imports", files={"file": ("t.parquet", _percent_table())})
        if r.status_code != 201:
            return False, f"import {r.status_code}: {r.text[:200]}"
        want = stored(first)
        problems = []
        for fmt in ("csv", "jsonl", "parquet"):
            data = c.get(f"/api/v1/datasets/{first}/export", params={"format": fmt}).content
            if fmt == "parquet":
                names = pq.read_table(io.BytesIO(data)).column_names
            else:
                names = list(json.loads(data.splitlines()[0])) if fmt == "jsonl" else data.decode().splitlines()[0]
            again = new(f"pct-{fmt}")
            r = c.post(f"/api/v1/datasets/{again}/imports", files={"file": (f"t.{fmt}", data)})
            if r.status_code != 201:
                problems.append(f"{fmt}: reimport {r.status_code} {r.text[:150]}")
            elif stored(again) != want:
                problems.append(f"{fmt}: differs (columns {names})")
    return not problems, "; ".join(problems) or "identical in csv, jsonl and parquet"


def check_percent_round_trip(b: Bench, postgres_url: str | None, work: Path) -> None:
    ok, sqlite_note = round_trip(b.server.base, b.api)
    pg_note = "Postgres: not run (no server at --postgres-url)"
    pg_ok = True
    if postgres_url:
        from app.db import create_postgres_database, drop_postgres_database

        name = f"curate_security_{uuid.uuid4().hex[:6]}"
        url = create_postgres_database(postgres_url, name)
        data = work / "pg-data"
        env = clean_env(data, CURATE_DATABASE_URL=url, CURATE_ADMIN_PASSWORD=ADMIN_PASSWORD)
        server = None
        try:
            init = curate(env, "migrate")
            assert init.returncode == 0, init.stderr
            made = curate(env, "user", "create", "pg-admin", "--role", "admin", "--password", ADMIN_PASSWORD)
            assert made.returncode == 0, made.stderr
            token = curate(env, "token", "create", "pg-admin").stdout.strip()
            server = start_server(env, work / "pg-serve.log", "--no-worker")
            pg_ok, note = round_trip(server.base, {"Authorization": f"Bearer {token}"})
            pg_note = f"Postgres: {note}"
        finally:
            if server is not None:
                stop(server)
            drop_postgres_database(postgres_url, name)
    b.rows.append(Row(
        "feature names with % (import, export, import)",
        f"columns 'pct%%s', '%', 'a%(b)s', 'naïve ∑ \"q\"': SQLite: {sqlite_note}; {pg_note}",
        "the same data back, on both databases", ok and pg_ok))


def check_cross_dataset_ids(b: Bench) -> None:
    one, two = create_dataset(b, "tabular", ["a", "b"]), create_dataset(b, "tabular", ["a", "b"])
    rng = np.random.default_rng(1)
    for ds in (one, two):
        assert upload(b, ds, "x.csv", _csv_rows(4, rng).replace(b"alpha", b"a").replace(b"beta", b"b")
                      .replace(b"gamma", b"a").replace(b"delta", b"b")).status_code == 201
    name, password = create_user(b, "cross-annotator")
    statuses = []
    with b.http() as c:
        sign_in(c, name, password)
        csrf = csrf_of(c.get("/account").text)
        s = c.get(f"/api/v1/datasets/{one}/samples", params={"limit": 1}).json()["items"][0]
        r = c.patch(f"/api/v1/samples/{s['id']}", json={"label": "b" if s["label"] == "a" else "a"},
                    headers={"If-Match": str(s["version"]), "X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        after = r.json()
        event = c.get(f"/api/v1/datasets/{one}/label-events", params={"limit": 1}).json()["items"][0]["id"]
        hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        for path, data in (
            (f"/datasets/{two}/review/grid", {"action": "undo", "undo": f"e{event}v{after['version']}"}),
            (f"/datasets/{two}/review", {"action": "undo", "undo": f"e{event}v{after['version']}"}),
            (f"/datasets/{two}/history/revert", {"event_id": str(event), "version": str(after["version"])}),
        ):
            statuses.append(c.post(path, data=data, headers=hx).status_code)
        now = c.get(f"/api/v1/samples/{s['id']}").json()
    ok = set(statuses) == {404} and now["version"] == after["version"] and now["label"] == after["label"]
    b.rows.append(Row(
        "another dataset's ids",
        f"dataset 1's label event through dataset 2's grid undo, queue undo and history revert: {statuses}; "
        f"dataset 1's sample {'unchanged' if ok else 'CHANGED'}",
        "404; nothing changes", ok))


def check_id_overflow(b: Bench) -> None:
    paths = [
        "/api/v1/datasets/9223372036854775808", "/api/v1/datasets/2147483648", "/api/v1/samples/2147483648",
        "/api/v1/jobs/18446744073709551616", "/api/v1/runs/2147483648", "/api/v1/datasets/1/samples?run=2147483648",
        "/api/v1/datasets/1/label-events?before=9223372036854775808", "/api/v1/datasets/1/export?snapshot=2147483648",
        "/api/v1/datasets/1/compare?run=2147483648&base=2147483649", "/datasets/2147483648",
        "/api/v1/datasets/1/samples?cursor=" + base64.urlsafe_b64encode(json.dumps([2**80, 2**80]).encode()).decode(),
    ]
    statuses = []
    with b.http() as c:
        for p in paths:
            statuses.append(c.get(p, headers=b.api).status_code)
        statuses.append(c.patch("/api/v1/samples/1", json={"label": "x"}, headers={**b.api, "If-Match": str(2**70)}).status_code)
        statuses.append(c.post("/api/v1/datasets/1/samples/bulk", json={"label": "x", "items": [{"id": 2**63, "version": 1}]},
                               headers=b.api).status_code)
    server_errors = [s for s in statuses if s >= 500]
    b.rows.append(Row(
        "ids out of range",
        f"{len(statuses)} requests with ids up to 2^80 (path, query, cursor, If-Match, bulk body): "
        f"{dict((s, statuses.count(s)) for s in sorted(set(statuses)))}",
        "404 or 4xx, never 5xx", not server_errors))


def check_schemathesis(b: Bench, examples: int, work: Path) -> None:
    excluded = ["DELETE /api/v1/tokens/{token_id}", "PATCH /api/v1/users/{user_id}"]
    cmd = [str(Path(sys.executable).parent / "st"), "run", b.server.base + "/openapi.json",
           "-H", f"Authorization: Bearer {b.admin_token}", "--checks", "not_a_server_error,response_schema_conformance",
           "--max-examples", str(examples), "--phases", "examples,coverage,fuzzing", "-w", "1",
           "--continue-on-failure", "--max-failures", "500", "--request-timeout", "120", "--seed", "42",
           "--generation-database", "none"]
    for name in excluded:
        cmd += ["--exclude-name", name]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3600)
    out = done.stdout + done.stderr
    (work / "schemathesis.txt").write_text(out)
    generated = re.search(r"(\d+) generated", out)
    failures = re.findall(r"ST\d+ ([^:\n]+): (\d+)", out)
    server_errors = sum(int(n) for kind, n in failures if "Server error" in kind)
    violations = sum(int(n) for kind, n in failures if "schema" in kind.lower())
    ok = done.returncode == 0 and generated is not None and not failures
    b.rows.append(Row(
        "schemathesis, whole API",
        f"{generated.group(1) if generated else '?'} generated requests over every operation but the caller's own "
        f"token revocation and deactivation ({time.monotonic() - t0:.0f} s): {server_errors} server errors, "
        f"{violations} response-schema violations" + (f"; other failures {failures}" if failures and not (server_errors or violations) else ""),
        "0 server errors, 0 schema violations", ok))


def check_optuna_first_search(b: Bench, demo_id: int) -> None:
    with b.http() as c:
        r = c.post(f"/api/v1/datasets/{demo_id}/jobs", json={"kind": "search", "params": {"n_trials": 2}}, headers=b.api)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        t0 = time.monotonic()
        page = c.get(f"/api/v1/jobs/{job}/search", headers=b.api)
        seconds = time.monotonic() - t0
        c.post(f"/api/v1/jobs/{job}/cancel", headers=b.api)
    ok = page.status_code == 200 and seconds < 5
    b.rows.append(Row(
        "first Optuna search on SQLite",
        f"the new search's page: {page.status_code} in {seconds * 1000:.0f} ms",
        "200 at once (Optuna's tables come with the migrations)", ok))


def check_settings_keys(b: Bench) -> None:
    with b.http() as c:
        r = c.post("/api/v1/datasets", json={"name": "settings-attack", "task": "text",
                                              "settings": {"payload": "x" * 100_000}}, headers=b.api)
    b.rows.append(Row("unknown dataset settings", f"a 100 kB unknown key: {r.status_code}", "422", r.status_code == 422))


def check_utf8_rows(b: Bench) -> None:
    ds = create_dataset(b, "text", ["a", "b"])
    data = b"id,label,text\nt1,a,fine\nt2,b,also fine\nt3,a,bad \xff\xfe here\n"
    r = upload(b, ds, "t.csv", data)
    errors = r.json().get("errors", []) if r.status_code == 422 else []
    rows = [e.get("row") for e in errors]
    ok = r.status_code == 422 and 3 in rows
    b.rows.append(Row("invalid UTF-8 in an import", f"a bad byte on data row 3: {r.status_code}, rows named {rows}",
                      "422 naming row 3", ok))


def check_secure_cookie(b: Bench) -> None:
    with b.http() as c:
        plain = c.get("/login").headers.get("set-cookie", "")
    with b.http() as c:
        tls = c.get("/login", headers={"X-Forwarded-Proto": "https"}).headers.get("set-cookie", "")
    plain_secure, tls_secure = "secure" in plain.lower(), "secure" in tls.lower()
    b.rows.append(Row(
        "Secure session cookie",
        f"over plain HTTP on loopback: {'Secure' if plain_secure else 'not Secure'}; behind a TLS proxy "
        f"(X-Forwarded-Proto: https): {'Secure' if tls_secure else 'not Secure'}",
        "Secure behind TLS", tls_secure and not plain_secure))


def check_database_outage(b: Bench, work: Path) -> None:
    env = clean_env(work / "down-data", CURATE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/curate",
                    CURATE_SECRET_KEY=uuid.uuid4().hex * 2)
    server = start_server(env, work / "down-serve.log", "--no-worker")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            health = c.get("/api/v1/health")
            api = c.get("/api/v1/datasets", headers={"Authorization": "Bearer cur_x"})
    finally:
        stop(server)
    ok = health.status_code == api.status_code == 503 and health.headers.get("retry-after")
    b.rows.append(Row(
        "database outage",
        f"Postgres unreachable: /health {health.status_code}, /datasets {api.status_code}, "
        f"Retry-After {health.headers.get('retry-after')}",
        "503 with Retry-After", bool(ok)))


def check_sigterm(b: Bench, demo_id: int) -> None:
    with b.http() as c:
        r = c.post(f"/api/v1/datasets/{demo_id}/jobs", json={"kind": "train", "params": {"epochs": 30}}, headers=b.api)
        job = r.json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            j = c.get(f"/api/v1/jobs/{job}", headers=b.api).json()
            if j["status"] == "running" and (j.get("progress") or 0) > 0:
                break
            time.sleep(0.5)
    worker_pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(b.server.proc.pid)], capture_output=True,
                                                    text=True).stdout.split()]
    t0 = time.monotonic()
    code = stop(b.server)
    seconds = time.monotonic() - t0
    time.sleep(1)
    alive = [p for p in worker_pids if Path(f"/proc/{p}").exists()]
    import sqlite3

    row = sqlite3.connect(b.server.data_dir / "curate.db").execute(
        "SELECT status, attempts FROM jobs WHERE id = ?", (job,)).fetchone()
    ok = code == 0 and not alive and row == ("queued", 0)
    b.rows.append(Row(
        "SIGTERM to curate serve",
        f"stopped in {seconds:.1f} s (exit {code}); worker processes left: {len(alive)}; its training job: "
        f"{row[0]}, attempts {row[1]}",
        "server and worker exit; the job is back in the queue, attempt not counted", ok))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small import and short fuzzing")
    parser.add_argument("--import-rows", type=int, default=None, help="rows of the large import (default 600,000)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--postgres-url", default=os.environ.get("CURATE_TEST_POSTGRES_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--only", default="", help="comma-separated parts of check names: run just those")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows = args.import_rows or (60_000 if args.quick else 600_000)
    examples = 10 if args.quick else 40
    postgres = args.postgres_url if _postgres_up(args.postgres_url) else None

    work = WORK / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    env = clean_env(data, CURATE_ADMIN_PASSWORD=ADMIN_PASSWORD)
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    init = curate(env, "init")
    if init.returncode != 0:
        raise SystemExit(f"curate init failed:\n{init.stdout}\n{init.stderr}")
    token = curate(env, "token", "create", "admin").stdout.strip()
    server = start_server(env, work / "serve.log")
    b = Bench(server, token, args.quick)
    demo_id = 1
    checks = [
        ("forged session cookie", lambda: check_secret_key(b)),
        ("Secure session cookie", lambda: check_secure_cookie(b)),
        ("SQLite lock contention", lambda: check_lock_contention(b, rows, args.clients)),
        ("ZIP bombs", lambda: check_zip_bombs(b)),
        ("session reuse", lambda: check_sessions(b)),
        ("sign-in timing and memory", lambda: check_login_timing_and_memory(b, 48)),
        ("CSV formula injection", lambda: check_header_injection(b)),
        ("% round trip", lambda: check_percent_round_trip(b, postgres, work)),
        ("another dataset's ids", lambda: check_cross_dataset_ids(b)),
        ("ids out of range", lambda: check_id_overflow(b)),
        ("unknown dataset settings", lambda: check_settings_keys(b)),
        ("invalid UTF-8 rows", lambda: check_utf8_rows(b)),
        ("first Optuna search", lambda: check_optuna_first_search(b, demo_id)),
        ("schemathesis", lambda: check_schemathesis(b, examples, work)),
        ("database outage", lambda: check_database_outage(b, work)),
        # Last but one: it leaves this address throttled for sign-ins.
        ("login throttling", lambda: check_login_throttle(b, 100)),
        ("SIGTERM", lambda: check_sigterm(b, demo_id)),
    ]
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        checks = [(n, r) for n, r in checks if any(w in n.lower() for w in wanted)]
    try:
        for name, run in checks:
            t0 = time.monotonic()
            print(f"-- {name}", flush=True)
            try:
                run()
            except Exception as exc:  # a check that breaks is a failed row, and the others still run
                b.rows.append(Row(name, f"the check raised {type(exc).__name__}: {str(exc)[:300]}", "-", False))
            print(f"   {b.rows[-1].figure} [{'pass' if b.rows[-1].passed else 'FAIL'}] ({time.monotonic() - t0:.0f} s)",
                  flush=True)
    finally:
        stop(server)
    minutes = (time.monotonic() - started) / 60
    write_report(report(b.rows, args, minutes, (load0, os.getloadavg()[0])), args.out)
    if not all(r.passed for r in b.rows):
        raise SystemExit(1)


def _postgres_up(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3):
            return True
    except Exception:
        return False


def report(rows: list[Row], args, minutes: float, load: tuple[float, float]) -> str:
    passed = sum(r.passed for r in rows)
    table = markdown_table(["check", "figure", "target", "result"],
                           [[r.check, r.figure, r.target, "pass" if r.passed else "**FAIL**"] for r in rows])
    return f"""# Security and robustness checks

Curate started as `make run` starts it (`curate init` on an empty data directory with no
CURATE_SECRET_KEY, then `curate serve` with its worker, on SQLite), then attacked over HTTP.
Each row is one check run end to end; its figure is what was measured. **{passed} of {len(rows)} checks pass.**

    .venv/bin/python bench/security.py {' '.join(sys.argv[1:])}

{table}

Run at {commit()} on {machine()}, {minutes:.1f} min, load average {load[0]:.1f} before and
{load[1]:.1f} after. The demo's first training run is running in the worker while the first
checks go on, as it does after `make run`.
"""


if __name__ == "__main__":
    main()
