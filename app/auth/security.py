"""Password hashing (argon2id), API tokens (random, stored as sha256) and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "cur_"


class HashingBusy(RuntimeError):
    """No password-hashing turn came free in time: the server is busy, try again shortly."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is busy checking passwords: please try again in a few seconds")
        self.retry_after = retry_after


class _HashingTurns:
    """At most `concurrency` argon2 hashes or checks at once in this process.

    Each one holds 64 MiB (argon2-cffi's default memory cost) for its duration, so without a
    cap a burst of logins grows memory without bound. Requests wait up to `wait_seconds` for
    a turn, then get HashingBusy (503) instead of queueing behind an unbounded crowd."""

    def __init__(self, concurrency: int, wait_seconds: float) -> None:
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.wait_seconds):
            raise HashingBusy(retry_after=max(1, math.ceil(self.wait_seconds)))
        try:
            yield
        finally:
            self._semaphore.release()


_turns = _HashingTurns(concurrency=4, wait_seconds=5.0)
_turns_lock = threading.Lock()


def configure_hashing(concurrency: int, wait_seconds: float) -> None:
    """Set the process-wide cap on concurrent password hashing (create_app does, from settings).
    Hashes already running finish on the turns they hold."""
    global _turns
    with _turns_lock:
        if (_turns.concurrency, _turns.wait_seconds) != (concurrency, wait_seconds):
            _turns = _HashingTurns(concurrency, wait_seconds)


def hashing_turn():
    """A turn to run argon2 (a context manager); raises HashingBusy when none comes free in time."""
    return _turns.turn()


def hash_password(password: str) -> str:
    with hashing_turn():
        return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    with hashing_turn():
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def new_api_token() -> str:
    """A new API token; only its hash is stored, so it is shown to the user once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a, b)
