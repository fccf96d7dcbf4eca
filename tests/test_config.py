import multiprocessing
import os
import re
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import (
    PLACEHOLDER_SECRET,
    InsecureSecretKey,
    Settings,
    is_loopback,
    resolve_secret_key,
)

WEAK_KEYS = [
    PLACEHOLDER_SECRET,
    "short",
    "x" * 48,
    "change-me-in-production-change-me-in-production",
    "please-replace-me-with-a-long-random-secret-key",
    "this-is-an-insecure-key-for-development-only-0123",
]


def test_default_database_is_sqlite_in_the_data_directory(tmp_path):
    s = Settings(data_dir=tmp_path, _env_file=None)
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'curate.db').resolve()}"


@pytest.mark.parametrize(
    "given",
    ["postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"],
)
def test_postgres_urls_use_psycopg3(given):
    assert Settings(database_url=given, _env_file=None).resolved_database_url == "postgresql+psycopg://u:p@h/db"


def test_settings_come_from_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_PORT", "9123")
    monkeypatch.setenv("CURATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CURATE_MAX_UPLOAD_BYTES", "1000")
    s = Settings(_env_file=None)
    assert (s.port, s.data_dir, s.max_upload_bytes) == (9123, tmp_path, 1000)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "curate.example.com", ""])
def test_network_addresses_are_not_loopback(host):
    assert not is_loopback(host)


@pytest.fixture
def no_key_env(monkeypatch):
    monkeypatch.delenv("CURATE_SECRET_KEY", raising=False)


@pytest.mark.parametrize("secret", WEAK_KEYS)
def test_a_weak_explicit_key_is_refused_with_how_to_make_one(secret, tmp_path):
    with pytest.raises(InsecureSecretKey) as info:
        resolve_secret_key(Settings(secret_key=secret, data_dir=tmp_path, _env_file=None))
    message = str(info.value)
    assert "CURATE_SECRET_KEY" in message and "secrets.token_urlsafe(48)" in message
    assert not (tmp_path / "secret_key").exists()


def test_a_random_explicit_key_is_used_as_given(tmp_path):
    key = "Yq3-kVtT1x_8wz0sFh2JmBn5RcLpD4aG"
    assert resolve_secret_key(Settings(secret_key=key, data_dir=tmp_path, _env_file=None)) == key
    assert not (tmp_path / "secret_key").exists(), "an explicit key needs no file"


def test_without_a_key_one_is_generated_private_and_reused(no_key_env, tmp_path):
    data = tmp_path / "data"
    first = resolve_secret_key(Settings(data_dir=data, _env_file=None))
    path = data / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first and len(first) >= 64
    assert PLACEHOLDER_SECRET not in first
    # A later start, another process reading the same data directory: the same key.
    assert resolve_secret_key(Settings(data_dir=data, _env_file=None)) == first
    other = resolve_secret_key(Settings(data_dir=tmp_path / "elsewhere", _env_file=None))
    assert other != first, "keys are random, not derived from anything"


def test_an_empty_key_setting_means_generate_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_SECRET_KEY", "")
    settings = Settings(data_dir=tmp_path, _env_file=None)
    assert settings.secret_key is None
    assert resolve_secret_key(settings) == (tmp_path / "secret_key").read_text().strip()


def _resolve_in_process(data_dir, barrier, out):
    barrier.wait()
    out.put(resolve_secret_key(Settings(data_dir=data_dir, _env_file=None)))


def test_processes_starting_together_end_up_with_one_key(no_key_env, tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_resolve_in_process, args=(tmp_path, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    keys = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(keys) == 1
    assert keys == {(tmp_path / "secret_key").read_text().strip()}
    assert sorted(os.listdir(tmp_path)) == ["secret_key"], "no temporary files are left behind"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_other_users_can_read_is_refused(no_key_env, tmp_path, mode):
    resolve_secret_key(Settings(data_dir=tmp_path, _env_file=None))
    path = tmp_path / "secret_key"
    path.chmod(mode)
    with pytest.raises(InsecureSecretKey, match="can be read by other users") as info:
        resolve_secret_key(Settings(data_dir=tmp_path, _env_file=None))
    assert f"chmod 600 {path}" in str(info.value)
    assert stat.S_IMODE(path.stat().st_mode) == mode, "the file is left for the operator to judge"


def test_a_weak_key_file_is_refused(no_key_env, tmp_path):
    path = tmp_path / "secret_key"
    path.write_text(PLACEHOLDER_SECRET + "\n")
    path.chmod(0o600)
    with pytest.raises(InsecureSecretKey, match="secret_key is refused"):
        resolve_secret_key(Settings(data_dir=tmp_path, _env_file=None))


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), ("always", "always"), ("never", "never"), ("true", "always"), ("false", "never"),
     ("1", "always"), ("0", "never")],
)
def test_secure_cookies_setting(monkeypatch, given, expected):
    monkeypatch.setenv("CURATE_SECURE_COOKIES", given)
    assert Settings(_env_file=None).secure_cookies == expected


def test_secure_cookies_defaults_to_auto_and_refuses_other_values(monkeypatch):
    monkeypatch.delenv("CURATE_SECURE_COOKIES", raising=False)
    assert Settings(_env_file=None).secure_cookies == "auto"
    with pytest.raises(ValidationError):
        Settings(secure_cookies="sometimes", _env_file=None)


def test_extra_job_handlers_are_read_once_from_their_comma_list(monkeypatch):
    monkeypatch.setenv("CURATE_EXTRA_JOB_HANDLERS", " bake = my.jobs:bake ,fry=my.jobs:fry,")
    assert Settings(_env_file=None).extra_job_handlers == {"bake": "my.jobs:bake", "fry": "my.jobs:fry"}
    monkeypatch.delenv("CURATE_EXTRA_JOB_HANDLERS")
    assert Settings(_env_file=None).extra_job_handlers == {}


@pytest.mark.parametrize("given", ["bake", "bake=my.jobs", "=my.jobs:bake", "bake=:bake", "bake=my.jobs:"])
def test_a_malformed_extra_job_handler_is_refused(monkeypatch, given):
    monkeypatch.setenv("CURATE_EXTRA_JOB_HANDLERS", given)
    with pytest.raises(ValidationError, match="kind=module:function"):
        Settings(_env_file=None)


@pytest.mark.parametrize("given, expected", [("", 0), (" ", 0), ("0", 0), ("3", 3)])
def test_torch_threads_setting(monkeypatch, given, expected):
    monkeypatch.setenv("CURATE_TORCH_THREADS", given)
    assert Settings(_env_file=None).torch_threads == expected


@pytest.mark.parametrize("given", ["-1", "many"])
def test_torch_threads_must_be_a_count(monkeypatch, given):
    monkeypatch.setenv("CURATE_TORCH_THREADS", given)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_only_the_settings_read_the_environment():
    """Every knob goes through Settings: no module of app/ but app/config.py reads os.environ."""
    app_dir = Path(__file__).resolve().parents[1] / "app"
    readers = [
        str(path.relative_to(app_dir.parent))
        for path in sorted(app_dir.rglob("*.py"))
        if path.name != "config.py" or path.parent != app_dir
        if re.search(r"\bos\.(environ|getenv)\b|\bgetenv\(", path.read_text())
    ]
    assert readers == []
