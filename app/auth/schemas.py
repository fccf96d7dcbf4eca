"""Request and response bodies of the account, token and user routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models import Role


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    role: Role = Role.annotator
    password: str | None = Field(default=None, description="default: generated and returned once")


class UserCreated(UserRead):
    password: str | None = Field(description="the generated password, shown once; null when one was given")


class UserUpdate(BaseModel):
    role: Role | None = None
    is_active: bool | None = None


class SessionRead(BaseModel):
    """A browser session; its token is never shown again, not even to its owner."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    last_seen_at: datetime
    user_agent: str | None
    ip: str | None


class SessionsRevoked(BaseModel):
    revoked: int = Field(description="how many sessions were signed out")


class TokenCreate(BaseModel):
    name: str = Field(default="api", max_length=100, description="what the token is for")


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="the token itself: shown once, stored only as a hash")
