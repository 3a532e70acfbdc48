"""Who may read the dashboard: a WSGI gate that asks every request for the token.

optuna-dashboard serves whoever connects (it has no authentication of its own), so
``strix dashboard`` puts this gate in front of it whenever it listens beyond loopback or a
token is set. A browser logs in once with the link printed at start (``?token=...``): the
gate answers with an HttpOnly cookie and sends the browser on to the same page without the
token in its address bar. Scripts send ``Authorization: Bearer TOKEN``. Tokens are compared
in constant time (``hmac.compare_digest``); the cookie holds an HMAC of the token, not the
token itself. Nothing but the standard library: no crypto of our own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]

COOKIE = "strix_dashboard"
REFUSED = (
    "this Strix dashboard asks for its token: open the link it printed when it started "
    "(.../dashboard?token=...), or send the header 'Authorization: Bearer TOKEN'"
)
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*")


def redact_token(text: str) -> str:
    """A request line or URL with its ``token=`` value replaced: for logs."""
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookie_of(token: str) -> str:
    return hmac.new(token.encode(), b"strix dashboard session", hashlib.sha256).hexdigest()


def _cookie(environ: dict) -> str:
    try:
        jar = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return ""
    return jar[COOKIE].value if COOKIE in jar else ""


def _bearer(environ: dict) -> str:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def token_gate(app: WSGIApp, token: str) -> WSGIApp:
    """``app`` for requests that carry ``token`` (header, cookie or login link); 401 else."""
    session = _cookie_of(token)

    def gate(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and _same(given[-1], token):
            return _login(environ, start_response, query, session)
        if _same(_bearer(environ), token) or _same(_cookie(environ), session):
            return app(environ, start_response)
        return _refuse(environ, start_response)

    return gate


def _login(
    environ: dict, start_response: Callable[..., Any], query: list, session: str
) -> Iterable[bytes]:
    """Set the session cookie and send the browser to the same page without the token."""
    rest = urlencode([(k, v) for k, v in query if k != "token"])
    location = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    cookie = f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
    headers = [("Location", location + (f"?{rest}" if rest else "")), ("Set-Cookie", cookie)]
    start_response("303 See Other", [*headers, ("Content-Length", "0")])
    return [b""]


def _refuse(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO", "").startswith("/api/"):
        body, kind = json.dumps({"reason": REFUSED}).encode(), "application/json"
    else:
        page = f"<!doctype html><title>Strix dashboard</title><p>{REFUSED}.</p>"
        body, kind = page.encode(), "text/html; charset=utf-8"
    headers = [("Content-Type", kind), ("WWW-Authenticate", 'Bearer realm="strix dashboard"')]
    start_response("401 Unauthorized", [*headers, ("Content-Length", str(len(body)))])
    return [body]
