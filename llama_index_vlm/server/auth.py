"""Who may use the server: an optional bearer token, and no requests from other sites.

With a token, every route answers 401 unless the request carries ``Authorization: Bearer
<token>`` or the session cookie the page's login sets. A browser logs in once, as with
Jupyter: open ``http://HOST:PORT/?token=<token>`` (``serve`` prints it), or type the token into
the form ``/`` shows; the server sets an HttpOnly, SameSite=Strict cookie and drops the token
from the address bar.

With or without a token, a state-changing request (POST, DELETE) whose ``Origin`` header names
another site is refused (403): a web page elsewhere cannot make a browser upload to, ask or
delete from a server on localhost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE_NAME = "llama_index_vlm_session"

#: Requests that need no token: the page (which shows the login form when not logged in) and
#: the login form's target.
_OPEN_ROUTES = {("GET", "/"), ("HEAD", "/"), ("POST", "/login")}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class TokenCheck:
    """Compares what a request carries with the server's token, in constant time."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("the token is empty")
        self._token = token.encode()
        # The cookie holds a value derived from the token, not the token itself.
        self.cookie_value = hmac.new(self._token, b"llama-index-vlm session", hashlib.sha256)
        self.cookie_value = self.cookie_value.hexdigest()

    def token_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    def allows(self, scope: Scope) -> bool:
        """Whether the request carries the token (header) or the session cookie."""
        headers = _headers(scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credentials.strip()):
            return True
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no credential
            return False
        morsel = cookies.get(COOKIE_NAME)
        return morsel is not None and hmac.compare_digest(morsel.value, self.cookie_value)


class AccessMiddleware:
    """ASGI middleware: refuses cross-site writes, and requests without the token (if any)."""

    def __init__(self, app: ASGIApp, token: str | None = None):
        self.app = app
        self.check = TokenCheck(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method not in _SAFE_METHODS and not _same_origin(scope):
            await _json_error(send, 403, "cross-site requests are refused; use the server's page")
            return
        if (
            self.check is not None
            and (method, path) not in _OPEN_ROUTES
            and not self.check.allows(scope)
        ):
            await _json_error(
                send,
                401,
                "this server needs its token: send 'Authorization: Bearer <token>', or open "
                "/?token=<token> in a browser",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _same_origin(scope: Scope) -> bool:
    headers = _headers(scope)
    origin = headers.get("origin")
    if origin is None:  # not sent by a browser's cross-site form or fetch
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


async def _json_error(
    send: Send, status: int, detail: str, extra_headers: list[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
