import pytest


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Trials are tiny models: one thread is fastest, and the suite shares the machine's cores."""
    monkeypatch.setenv("CURATE_TORCH_THREADS", "1")


from tests.jobs.conftest import worker_process  # noqa: E402,F401  (worker processes on the test database)
