"""Settings from the environment (prefix CURATE_) and an optional .env file."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "change-me-in-production"


class Settings(BaseSettings):
    """Every knob of Curate; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="CURATE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="blobs, artifacts and the SQLite file")
    database_url: str | None = Field(default=None, description="default: SQLite in the data directory")
    secret_key: str = PLACEHOLDER_SECRET
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
    worker_poll_seconds: float = 1.0

    session_cookie: str = "curate_session"
    session_max_age: int = 14 * 24 * 3600
    secure_cookies: bool = False

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

    def check_can_serve(self, host: str) -> None:
        """Refuse to serve a non-loopback address with the placeholder secret key."""
        if is_loopback(host):
            return
        if self.secret_key == PLACEHOLDER_SECRET or len(self.secret_key) < 32:
            raise RuntimeError(
                f"refusing to serve on {host}: set CURATE_SECRET_KEY to a random value of at "
                "least 32 characters (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests clear this cache after changing the environment)."""
    return Settings()
