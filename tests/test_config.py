import pytest

from app.config import PLACEHOLDER_SECRET, Settings, is_loopback


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
def test_loopback_serves_with_the_placeholder_secret(host):
    assert is_loopback(host)
    Settings(secret_key=PLACEHOLDER_SECRET, _env_file=None).check_can_serve(host)


@pytest.mark.parametrize("secret", [PLACEHOLDER_SECRET, "short"])
def test_public_address_needs_a_real_secret(secret):
    with pytest.raises(RuntimeError, match="CURATE_SECRET_KEY"):
        Settings(secret_key=secret, _env_file=None).check_can_serve("0.0.0.0")
    Settings(secret_key="x" * 40, _env_file=None).check_can_serve("0.0.0.0")
