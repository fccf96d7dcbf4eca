"""The `curate` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.markup import escape

from app.config import InsecureSecretKey, get_settings, resolve_secret_key

cli = typer.Typer(help="Curate: find and fix the labels that hold a classifier back.", no_args_is_help=True)
user_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
token_cli = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(token_cli, name="token")
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from app.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    console.print("database is up to date")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default CURATE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default CURATE_PORT)")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="do not start a worker process")] = False,
) -> None:
    """Serve the web app and the API; starts one worker process beside it unless --no-worker.

    SIGTERM or Ctrl-C stops both: the server finishes its requests, the worker gives its
    running job back to the queue (the attempt does not count) and exits. A worker whose
    server dies without saying so (SIGKILL) notices within a second and stops the same way.
    """
    import uvicorn

    settings = get_settings()
    # The app decides on Secure cookies from the address it is really served on.
    settings = settings.model_copy(update={"host": host or settings.host, "port": port or settings.port})
    host, port = settings.host, settings.port
    try:
        # Before the worker starts: a refused key stops everything with its message.
        resolve_secret_key(settings)
    except (InsecureSecretKey, OSError) as exc:
        fail(escape(f"refusing to serve on {host}: {exc}"))
    # uvicorn handles SIGTERM itself, then raises it again once it has shut down; under the
    # default handler that would end this process before it stops the worker below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    worker = None
    if not no_worker:
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--parent-pid", str(os.getpid())])
    try:
        from app.main import serving_app

        console.print(f"Curate is serving at http://{host}:{port}")
        uvicorn.run(serving_app(settings), host=host, port=port, log_level="info", proxy_headers=True)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            _stop_worker(worker, settings.worker_stop_seconds)


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(0)


def _stop_worker(worker: subprocess.Popen, grace: float) -> None:
    """SIGTERM the worker and wait for it to hand its job back; SIGKILL it after `grace` seconds."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        err.print(f"the worker did not stop within {grace:g} s (CURATE_WORKER_STOP_SECONDS); killing it")
        worker.kill()
        worker.wait()


@cli.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="run at most one waiting job, then exit")] = False,
    worker_id: Annotated[str | None, typer.Option("--id", help="worker name in the jobs table (default host:pid)")] = None,
    parent_pid: Annotated[
        int | None, typer.Option("--parent-pid", hidden=True, help="stop when this process (curate serve) is gone")
    ] = None,
) -> None:
    """Run queued jobs one at a time; SIGTERM or Ctrl-C puts the running job back in the queue and exits."""
    import logging

    # Kept light on purpose: torch is imported by a handler, only when a job needs it.
    from app.jobs.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Worker(settings, worker_id=worker_id, parent_pid=parent_pid).run(once=once, install_signals=True)


@cli.command()
def demo(
    queue_run: Annotated[bool, typer.Option("--queue-run/--no-queue-run", help="queue the first training run")] = True,
    multilabel: Annotated[bool, typer.Option("--multilabel", help="load the multi-label demo instead: digit mosaics "
                                                                  "tagged with their digits, 12% of train sets noisy")] = False,
) -> None:
    """Load the demo dataset (digits, 10% of train labels flipped) and queue its first run."""
    from app.datasets.demo import DEMO_NAME, demo_exists, load_demo, queue_first_run
    from app.datasets.demo_multilabel import MULTILABEL_DEMO_NAME, load_multilabel_demo, queue_multilabel_run
    from app.datasets.storage import BlobStore
    from app.db import session_scope

    settings = get_settings()
    name = MULTILABEL_DEMO_NAME if multilabel else DEMO_NAME
    with session_scope() as session:
        if demo_exists(session, name):
            console.print(f"the demo dataset {name!r} is already loaded")
            return
        queue = queue_multilabel_run if multilabel else queue_first_run
        if multilabel:
            ds = load_multilabel_demo(session, settings)
        else:
            ds = load_demo(session, BlobStore(settings.blob_dir))
        job = queue(session, ds, settings.job_max_attempts) if queue_run else None
    console.print(f"loaded the demo dataset {name!r} (id {ds.id})")
    if job is not None:
        console.print(f"queued its first training run (job {job.id}); a worker picks it up")


@cli.command()
def init() -> None:
    """First start: migrate, create the admin account, load the demo into an empty database."""
    from sqlalchemy import func, select

    from app.auth.service import create_user
    from app.db import session_scope
    from app.models import Dataset, User

    migrate()
    settings = get_settings()
    created = None
    with session_scope() as session:
        if session.scalar(select(User.id).where(User.role == "admin").limit(1)) is None:
            _, password = create_user(session, "admin", "admin", settings.admin_password)
            created = ("the password from CURATE_ADMIN_PASSWORD" if settings.admin_password
                       else f"password [bold]{escape(password)}[/bold]\n(shown once; set CURATE_ADMIN_PASSWORD to choose it)")
        empty = session.scalar(select(func.count(Dataset.id))) == 0
    if empty:
        demo()
    if created is not None:
        # Last and framed, so that it does not scroll away under what was printed before it.
        console.print(Panel(f"Sign in as [bold]admin[/bold] with {created}", title="Curate: the admin account",
                            expand=False))


@user_cli.command("create")
def user_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, engineer or annotator")] = "annotator",
    password: Annotated[str | None, typer.Option(help="default: generated and printed once")] = None,
) -> None:
    """Create a user."""
    from app.auth.service import UserError, create_user
    from app.db import session_scope

    try:
        with session_scope() as session:
            _, pw = create_user(session, name, role, password)
    except UserError as exc:
        fail(str(exc))
    console.print(f"created {role} {name!r}")
    if password is None:
        console.print(f"password: {pw}")


@token_cli.command("create")
def token_create(name: str, label: Annotated[str, typer.Option(help="what the token is for")] = "cli") -> None:
    """Print a new API token for user NAME (shown once, stored hashed)."""
    from app.auth.service import create_token, find_user
    from app.db import session_scope

    with session_scope() as session:
        user = find_user(session, name)
        if user is None:
            fail(f"no user named {name!r}")
        _, token = create_token(session, user, label)
    print(token)


@cli.command("import")
def import_(
    dataset: Annotated[str, typer.Argument(help="dataset id or name")],
    file: Annotated[str, typer.Argument(help=".csv, .jsonl, .parquet or .zip of images")],
    on_conflict: Annotated[str, typer.Option(help="an id that exists already: error, or update its label and split")] = "error",
) -> None:
    """Add samples to DATASET from FILE, all or nothing; prints every bad row (up to a limit)."""
    from app.datasets import importers

    try:
        summary = importers.import_path(dataset, file, on_conflict, get_settings())
    except (importers.ImportFailed, OSError, ValueError) as exc:
        fail(escape(importers.describe_failure(exc)))
    console.print(escape(summary))


@cli.command("export")
def export(
    dataset: Annotated[str, typer.Argument(help="dataset id or name")],
    format: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet")] = "csv",
    split: Annotated[str | None, typer.Option(help="train, valid, test or unlabelled")] = None,
    snapshot: Annotated[int | None, typer.Option(help="pin labels and splits to this snapshot")] = None,
    out: Annotated[str | None, typer.Option(help="output file (default: standard output, for csv and jsonl)")] = None,
) -> None:
    """Write DATASET's samples, labels and latest scores as CSV, JSONL or Parquet."""
    from app.datasets import exporters
    from app.errors import CurateError

    try:
        exporters.export_path(dataset, format, split, snapshot, out, sys.stdout.buffer)
    except (CurateError, OSError) as exc:
        fail(escape(str(exc)))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
