"""Settings from the environment (prefix CURATE_) and an optional .env file, and the key
that signs session cookies."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

# The default key of earlier versions: public, so a cookie signed with it proves nothing.
PLACEHOLDER_SECRET = "change-me-in-production"
MIN_SECRET_LENGTH = 32
SECRET_KEY_FILE = "secret_key"
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# Fragments of the values people paste from examples (compared lower-case, letters and digits only).
_PLACEHOLDER_MARKERS = (
    "changeme", "changethis", "replaceme", "placeholder", "yoursecret", "secretkeyhere", "insecure", "notsecret",
)

CookieSecurity = Literal["auto", "always", "never"]


class Settings(BaseSettings):
    """Every knob of Curate; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="CURATE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="blobs, artifacts and the SQLite file")
    database_url: str | None = Field(default=None, description="default: SQLite in the data directory")
    secret_key: str | None = Field(
        default=None, description="default: generated on first start and kept in data_dir/secret_key"
    )
    admin_password: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    # Upload limits: a request body over max_upload_bytes is refused before it is parsed.
    max_upload_bytes: int = 1024 * 1024 * 1024
    max_import_rows: int = 5_000_000
    max_image_pixels: int = 4096 * 4096
    max_zip_uncompressed_bytes: int = 4 * 1024 * 1024 * 1024
    # Each ZIP entry is checked against these from the ZIP's directory before anything is
    # read, and counted again as it is inflated: an image, the labels file, and how much an
    # entry over 1 MiB may shrink when compressed (uncompressed size / compressed size).
    max_zip_entry_bytes: int = 64 * 1024 * 1024
    max_zip_labels_bytes: int = 512 * 1024 * 1024
    max_zip_compression_ratio: int = 200
    max_import_errors: int = 50

    # Jobs
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 3
    # Retention (docs/database.md): the per-sample predictions of a dataset's latest
    # keep_runs succeeded runs, and of pinned runs, are kept; older runs keep their metrics,
    # history and summaries, and their predictions are dropped when a train run succeeds.
    keep_runs: int = Field(default=3, ge=1, description="succeeded runs per dataset whose predictions are kept")
    # Review-queue claims (docs/queries.md, Claims): how long a handed-out sample stays
    # with its annotator; an open queue page renews its claims every third of this.
    claim_seconds: int = Field(default=300, ge=10, le=86400, description="how long a queue hand-out is held")
    api_docs: Literal["public", "users", "off"] = Field(
        default="public", description="who reads /docs, /redoc and /openapi.json: anyone, signed-in users, or no one"
    )
    worker_poll_seconds: float = 1.0
    # `curate serve` waits this long for its worker to hand back a running job when stopped.
    worker_stop_seconds: float = 60.0
    # More job kinds, as "kind=module:function,...": each handler is called as function(ctx).
    extra_job_handlers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Torch's CPU threads in a job that trains; 0: the cores idle when the job starts.
    torch_threads: int = Field(default=0, ge=0)
    # Data-parallel training (docs/gpu.md). The devices a worker advertises: it claims only jobs
    # that ask for at most this many; 0: its CUDA GPUs (1 on a machine without one). Set it on a
    # CPU machine to train on several gloo processes.
    worker_devices: int = Field(default=0, ge=0, le=64)
    # Rank 0's rendezvous address (host:port) when other machines' ranks join a job; empty: a
    # free port on 127.0.0.1, every rank on this machine.
    ddp_address: str = ""
    # How many of a job's ranks this machine starts (the rest join from elsewhere); 0: all of them.
    ddp_local_devices: int = Field(default=0, ge=0, le=64)

    session_cookie: str = "curate_session"
    session_max_age: int = 14 * 24 * 3600
    # auto: Secure when served on a non-loopback address or when the request came over TLS.
    secure_cookies: CookieSecurity = "auto"

    # Password guessing: failed password checks (sign-in, and the current password when changing
    # it) counted in the database per account and per client address over a sliding window.
    # Past a limit, attempts get 429 without the password being checked, for anyone alike.
    login_max_failures_per_account: int = Field(default=10, ge=1)
    login_max_failures_per_address: int = Field(default=50, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    # Each argon2 hash or check takes 64 MiB: at most this many run at once in a process, and a
    # request that waits longer than password_hash_wait_seconds for a turn gets 503.
    password_hash_concurrency: int = Field(default=4, ge=1)
    password_hash_wait_seconds: float = Field(default=5.0, gt=0)

    @field_validator("secret_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value):
        # CURATE_SECRET_KEY= (empty, as compose files pass an unset variable) means "generate one".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("extra_job_handlers", mode="before")
    @classmethod
    def _job_handlers(cls, value):
        return parse_job_handlers(value) if isinstance(value, str) else value

    @field_validator("torch_threads", mode="before")
    @classmethod
    def _blank_threads_is_auto(cls, value):
        return 0 if isinstance(value, str) and not value.strip() else value

    @field_validator("secure_cookies", mode="before")
    @classmethod
    def _cookie_security(cls, value):
        return cookie_security(value)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the SQLite default and the psycopg 3 driver filled in."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'curate.db').resolve()}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / SECRET_KEY_FILE


class InsecureSecretKey(RuntimeError):
    """The configured or stored session key cannot be trusted; the message says how to fix it."""


def parse_job_handlers(text: str) -> dict[str, str]:
    """"kind=module:function,..." as {kind: "module:function"}; empty items are skipped."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        kind, sep, path = (part.strip() for part in item.partition("="))
        module, colon, func = path.partition(":")
        if not sep or not kind or not colon or not module or not func:
            raise ValueError(f"{item.strip()!r} is not kind=module:function")
        out[kind] = path
    return out


def cookie_security(value) -> str:
    """auto, always or never; true and false (the old boolean setting) mean always and never."""
    if isinstance(value, bool):
        return "always" if value else "never"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return "always"
        if text in ("0", "false", "no", "off"):
            return "never"
        return text
    return value


def secret_key_problem(key: str) -> str | None:
    """Why key must not sign session cookies, or None when it looks random enough."""
    letters = re.sub(r"[^a-z0-9]", "", key.lower())
    if any(marker in letters for marker in _PLACEHOLDER_MARKERS):
        return "it is a placeholder, not a secret"
    if len(key) < MIN_SECRET_LENGTH:
        return f"it is {len(key)} characters long, and at least {MIN_SECRET_LENGTH} are needed"
    if len(set(key)) < 8:
        return "it repeats too few different characters to be random"
    return None


def resolve_secret_key(settings: Settings) -> str:
    """The key that signs session cookies: CURATE_SECRET_KEY when set, else the key generated
    on first start in the data directory. The one place both `create_app` and `curate serve`
    get it from, so nothing can serve with a key that anyone else could know.

    A weak explicit key is refused on every address, loopback included: a cookie forged with
    it makes anyone who can reach the port (any local user, any page in a browser that can
    reach it through a tunnel) an admin.
    """
    if settings.secret_key is not None:
        problem = secret_key_problem(settings.secret_key)
        if problem:
            raise InsecureSecretKey(
                f"CURATE_SECRET_KEY is refused: {problem}. Set it to a random value of at least "
                f"{MIN_SECRET_LENGTH} characters ({MAKE_A_KEY}), or leave it unset to have Curate "
                f"generate one in {settings.secret_key_file}"
            )
        return settings.secret_key
    return _key_from_file(settings.secret_key_file)


def _key_from_file(path: Path) -> str:
    """The key stored at path, created (0600, all at once) when there is none yet."""
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


def _create_key_file(path: Path) -> None:
    """Write a new random key to path unless another process gets there first.

    The key goes to a private temporary file that is then hard-linked into place: the link
    fails if the file exists, and nobody ever sees it half-written, so processes starting
    together all end up with the one key that won.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (secrets.token_urlsafe(48) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new_file(tmp, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    except OSError:
        # A filesystem without hard links: create the file itself, exclusively; a reader that
        # finds it still empty waits for the write (_read_key_file).
        try:
            _write_new_file(path, data)
        except FileExistsError:
            return
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("generated a new secret key for session cookies in %s: keep it private, and give every web "
                "server of this installation the same one", path)


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path, wait_seconds: float = 2.0) -> str:
    """The key in path, refused when other users could read it (it may have leaked already:
    tightening the mode quietly would keep a key that someone else may hold)."""
    mode = path.stat().st_mode
    if os.name == "posix" and mode & 0o077:
        raise InsecureSecretKey(
            f"{path} can be read by other users (mode {mode & 0o777:o}): anyone who read it can sign "
            f"in as any user. Delete it to have a new key generated (everyone signs in again), or, "
            f"if nobody else can have read it, run chmod 600 {path}"
        )
    deadline = time.monotonic() + wait_seconds
    while not (key := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    problem = "it is empty" if not key else secret_key_problem(key)
    if problem:
        raise InsecureSecretKey(f"{path} is refused: {problem}. Delete it to have a new key generated")
    return key


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The variables torchrun sets for each process it starts (docs/gpu.md, several machines).
TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def torchrun_environment() -> dict[str, str]:
    """Those of the torchrun variables that this process's environment sets."""
    return {name: os.environ[name] for name in TORCHRUN_VARIABLES if name in os.environ}


def forget_rank_environment() -> None:
    """Unset RANK, WORLD_SIZE and LOCAL_RANK in this process: fastai reads them to decide
    whether to gather predictions across ranks, which a follower rank must not do."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(name, None)


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with `overrides`, for a child process."""
    return {**os.environ, **overrides}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests clear this cache after changing the environment)."""
    return Settings()
