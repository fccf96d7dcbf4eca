"""What several benches share: a Markdown table, the report file, a free port, the machine."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(text: str, out: str | Path) -> None:
    """Write the report (creating its folder) and print it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print(text)
    print(f"\nwritten to {out}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit() -> str:
    """The checkout's commit, with '+changes' when the tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+changes" if dirty else "")


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def wait_for_health(proc, port: int, log_path: Path, seconds: float, workers: int = 1) -> None:
    """Wait until a server started as `proc` answers /api/v1/health on `port`, then warm every
    worker process (each must be up, not just the first to bind). Stops the server and
    raises, with its log's tail, if it exits or does not answer within `seconds`."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"the server did not answer within {seconds:.0f} s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as warm:
        for _ in range(20 * workers):
            warm.get("/api/v1/health")
