import hashlib

from sqlalchemy import select

from app.auth import service
from app.auth.security import (
    hash_password,
    hash_token,
    new_api_token,
    new_csrf_token,
    tokens_match,
    verify_password,
)
from app.models import ApiToken, User


def test_passwords_are_hashed_with_argon2id_and_verified():
    h = hash_password("correct horse battery")
    assert h.startswith("$argon2id$")
    assert "correct horse battery" not in h
    assert verify_password(h, "correct horse battery")
    assert not verify_password(h, "correct horse batterY")
    assert not verify_password(h, "")


def test_the_same_password_hashes_differently_each_time():
    assert hash_password("password-123") != hash_password("password-123")


def test_a_malformed_hash_never_verifies():
    assert not verify_password("not-a-hash", "anything")
    assert not verify_password("", "")


def test_api_tokens_are_random_and_stored_as_sha256(db):
    user, _ = service.create_user(db, "tok", "engineer", "password-123")
    row, token = service.create_token(db, user, "ci")
    db.commit()
    assert token.startswith("cur_") and len(token) > 40
    assert token != new_api_token()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert row.prefix == token[:8]
    stored = db.execute(select(ApiToken.name, ApiToken.token_hash, ApiToken.prefix)).one()
    assert token not in stored


def test_user_rows_keep_no_plain_password(db):
    service.create_user(db, "plain", "annotator", "password-123")
    db.commit()
    (h,) = db.execute(select(User.password_hash).where(User.username == "plain")).one()
    assert "password-123" not in h and verify_password(h, "password-123")


def test_tokens_match_needs_two_equal_non_empty_values():
    t = new_csrf_token()
    assert tokens_match(t, t)
    assert not tokens_match(t, new_csrf_token())
    assert not tokens_match(None, t)
    assert not tokens_match(t, None)
    assert not tokens_match("", "")


def test_authenticate_accepts_only_the_right_password_of_an_active_user(db):
    user, _ = service.create_user(db, "carol", "annotator", "password-123")
    assert service.authenticate(db, "carol", "password-123") is user
    assert service.authenticate(db, " carol ", "password-123") is user
    assert service.authenticate(db, "carol", "password-124") is None
    assert service.authenticate(db, "nobody", "password-123") is None
    user.is_active = False
    assert service.authenticate(db, "carol", "password-123") is None


def test_passwords_shorter_than_eight_characters_are_refused(db):
    user, _ = service.create_user(db, "dave", "annotator", "password-123")
    for bad in ("", "1234567"):
        try:
            service.set_password(db, user, bad)
        except service.UserError as exc:
            assert "at least 8" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    service.set_password(db, user, "12345678")
    assert verify_password(user.password_hash, "12345678")
