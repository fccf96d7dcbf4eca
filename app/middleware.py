"""ASGI middleware: request-size limit, security headers and the session cookie."""

from __future__ import annotations

import json

from starlette.middleware.sessions import SessionMiddleware

from app.config import cookie_security, is_loopback

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class BodySizeLimit:
    """413 for a body over max_bytes: by Content-Length before anything is read, else while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await _json(send, 400, "invalid Content-Length header")
                if length > self.max_bytes:
                    return await _json(send, 413, self._message())
        received = 0
        refused = False  # we answered 413 ourselves; the app's own answer is dropped
        response_started = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # A chunked body without Content-Length: answer 413 now and tell the
                    # app the client went away, so no parser turns this into a 400.
                    refused = True
                    if not response_started:
                        await _json(send, 413, self._message())
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not refused:
                raise

    def _message(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes (CURATE_MAX_UPLOAD_BYTES)"


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """A Content-Security-Policy without inline scripts, and the usual hardening headers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SessionCookie(SessionMiddleware):
    """Starlette's signed session cookie, with its Secure flag decided per request.

    secure="auto" marks the cookie Secure when the app is served on a non-loopback address
    (browsers must not send it over plain HTTP across a network) or when this request came
    over TLS: uvicorn's --proxy-headers sets the scheme from X-Forwarded-Proto, for trusted
    proxies only. "always" and "never" force it either way.
    """

    def __init__(self, app, *, secure: str = "auto", bound_host: str = "127.0.0.1", **kwargs) -> None:
        super().__init__(app, https_only=False, **kwargs)
        self.secure = cookie_security(secure)
        if self.secure not in ("auto", "always", "never"):
            raise ValueError(f"secure must be auto, always or never, not {secure!r}")
        self.public = not is_loopback(bound_host)
        self._prefix = f"{self.session_cookie}=".encode()

    def is_secure(self, scope) -> bool:
        if self.secure != "auto":
            return self.secure == "always"
        return self.public or scope.get("scheme") in ("https", "wss")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.is_secure(scope):
            return await super().__call__(scope, receive, send)

        async def send_secure(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [self._secured(k, v) for k, v in message.get("headers", [])]}
            await send(message)

        await super().__call__(scope, receive, send_secure)

    def _secured(self, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name.lower() == b"set-cookie" and value.startswith(self._prefix) and b"; secure" not in value.lower():
            value += b"; secure"
        return name, value
