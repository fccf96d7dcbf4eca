"""A database that cannot be reached answers 503 with a retry hint, never a bare 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_SECRET
from tests.web.session import csrf_from

# Nothing listens on port 1: every connection attempt is refused at once.
DOWN = "postgresql://postgres@127.0.0.1:1/curate"


def _client(tmp_path) -> TestClient:
    settings = Settings(database_url=DOWN, data_dir=tmp_path / "data", secret_key=TEST_SECRET, _env_file=None)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_api_calls_answer_503_with_retry_after(tmp_path):
    with _client(tmp_path) as client:
        for path in ("/api/v1/health", "/api/v1/datasets"):
            headers = {"Authorization": "Bearer cur_whatever"} if "datasets" in path else {}
            r = client.get(path, headers=headers)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"] == "5"
            assert "try again" in r.json()["detail"]


def test_a_page_answers_503_with_the_error_page(tmp_path):
    with _client(tmp_path) as client:
        token = csrf_from(client.get("/login").text)
        r = client.post("/login", data={"username": "a", "password": "b", "csrf_token": token},
                        headers={"Accept": "text/html"})
        assert r.status_code == 503
        assert "Try again shortly" in r.text and r.headers["retry-after"] == "5"
