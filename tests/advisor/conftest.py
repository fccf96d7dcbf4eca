import pytest


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Tiny models train fastest on one thread, and the suite shares the machine's cores."""
    monkeypatch.setenv("CURATE_TORCH_THREADS", "1")
