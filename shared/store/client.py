"""Connecting to MongoDB, and the one place where pymongo errors become Strix errors.

Every public method of the store classes is wrapped by :func:`guarded`, so callers only
ever see :class:`~shared.errors.StoreError` subclasses, and every message is redacted:
a password never reaches a log line or an error message.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus, urlsplit

import pymongo
import pymongo.errors
from pymongo import common, uri_parser

from shared.config import defaults
from shared.errors import StoreAuthError, StoreConfigError, StoreError, StoreUnavailable

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_USERINFO = re.compile(r"(?P<scheme>mongo(?:db)?(?:\+srv)?://)(?P<user>[^:@/\s]*):[^\s?#]*@")
_OPTION = re.compile(r"\b(?P<key>(?P<name>[A-Za-z]+)=)(?P<value>[^&;#\s]*)")
# the URI options spec's sensitive options (pymongo's list, and the spec's own names)
_SENSITIVE = {"proxyusername", "proxypassword", "tlscertificatekeyfilepassword", "password"}
_SENSITIVE |= {o.lower() for o in getattr(common, "SENSITIVE_OPTIONS_FOR_REPR", ())}
# authMechanismProperties keys pymongo shows in its repr; any other (AWS_SESSION_TOKEN) is secret
_SAFE_PROPS = {"ALLOWED_HOSTS", "CANONICALIZE_HOST_NAME", "ENVIRONMENT", "SERVICE_HOST"}
_SAFE_PROPS |= {"SERVICE_NAME", "SERVICE_REALM", "TOKEN_RESOURCE"}
_SECRETS: set[str] = set()


def redact(text: str) -> str:
    """``***`` for every password in userinfo, every secret query option (the URI options
    spec's sensitive ones, authMechanismProperties values but the safe ones), and every
    secret a URI parsed here held, wherever it shows up again."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    text = _OPTION.sub(_redact_option, text)
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def _redact_option(m: re.Match) -> str:
    name = m["name"].lower()
    if name in _SENSITIVE:
        return f"{m['key']}***"
    if name == "authmechanismproperties":
        parts = re.split(r"(,|%2C)", m["value"], flags=re.IGNORECASE)
        return m["key"] + "".join(_redact_property(p) for p in parts)
    return m[0]


def _redact_property(part: str) -> str:
    pieces = re.split(r"(:|%3A)", part, maxsplit=1, flags=re.IGNORECASE)
    if len(pieces) < 3 or pieces[0].upper() in _SAFE_PROPS:
        return part
    return f"{pieces[0]}{pieces[1]}***"


def _remember_secrets(url: str) -> None:
    """Keep the URI's secrets (as written and decoded) so that no later message shows them."""
    parts = urlsplit(url)
    found = [unquote_plus(parts.password or "")]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in _SENSITIVE:
            found.append(value)
        elif name.lower() == "authmechanismproperties":
            pairs = (p.partition(":") for p in value.split(","))
            found += [v for k, _, v in pairs if k.upper() not in _SAFE_PROPS]
    for secret in filter(None, found):
        _SECRETS.update({secret, quote(secret, safe=""), quote_plus(secret)})


@dataclass(frozen=True)
class MongoTarget:
    """A parsed MongoDB location: the client URI, the database and the jobs collection."""

    uri: str
    db: str
    collection: str = "jobs"

    def __repr__(self) -> str:
        return f"MongoTarget(uri={redact(self.uri)!r}, db={self.db!r})"

    @property
    def redacted(self) -> str:
        return f"{redact(self.uri)} (db {self.db})"


def parse_target(url: str, db: str | None = None) -> MongoTarget:
    """Accept ``mongodb://``, ``mongodb+srv://`` and hyperopt's ``mongo://host:port/db/jobs``."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreConfigError(
            f"malformed MongoDB URI {redact(str(url))!r}: expected mongodb://[user:pass@]host"
            "[:port][/db][?options], mongodb+srv://..., or hyperopt's mongo://host:port/db/jobs"
        )
    if url.startswith("mongo://"):
        return _parse_hyperopt(url, db)
    parts = urlsplit(url)
    if parts.scheme not in ("mongodb", "mongodb+srv") or not parts.hostname:
        raise StoreConfigError(
            f"malformed MongoDB URI {redact(url)!r}: expected mongodb://[user:pass@]host"
            "[:port][/db][?authSource=admin&tls=true], or mongodb+srv://..."
        )
    _remember_secrets(url)
    if parts.scheme == "mongodb":
        try:
            uri_parser.parse_uri(url)
        except (pymongo.errors.PyMongoError, ValueError) as e:
            reason = redact(str(e))
            raise StoreConfigError(f"malformed MongoDB URI {redact(url)!r}: {reason}") from None
    path_db = parts.path.strip("/")
    return MongoTarget(url, db or path_db or defaults.DB_NAME)


def _parse_hyperopt(url: str, db: str | None) -> MongoTarget:
    rest = url[len("mongo://") :]
    netloc, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not netloc or len(parts) > 2:
        raise StoreConfigError(
            f"malformed hyperopt URI {redact(url)!r}: expected mongo://[user:pass@]host:port/db/jobs"
        )
    if "@" in netloc:
        _SECRETS.add(unquote_plus(netloc.rsplit("@", 1)[0].partition(":")[2]))
    uri = f"mongodb://{netloc}/"
    if "@" in netloc:
        uri += "?authSource=admin"
    return MongoTarget(
        uri, db or (parts[0] if parts else defaults.DB_NAME), parts[1] if len(parts) > 1 else "jobs"
    )


def translate(exc: BaseException, target: str = "MongoDB") -> StoreError:
    """Map one pymongo exception onto Strix's hierarchy, with a redacted one-line message."""
    msg = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    msg = re.split(r" \(configured timeouts|, Timeout: |, full error", msg)[0][:240]
    if isinstance(exc, pymongo.errors.OperationFailure) and exc.code in (18, 13, 8000):
        return StoreAuthError(
            f"MongoDB at {target} refused the credentials ({msg}); check the user, "
            "password and authSource in the URI"
        )
    if isinstance(exc, pymongo.errors.ServerSelectionTimeoutError | pymongo.errors.AutoReconnect):
        return StoreUnavailable(
            f"cannot reach MongoDB at {target}: {msg}. Is the server running and the "
            "host/port right, and does this machine reach it?"
        )
    if isinstance(exc, pymongo.errors.ConfigurationError):
        return StoreError(f"bad MongoDB configuration for {target}: {msg}")
    return StoreError(f"MongoDB error at {target}: {msg}")


@contextmanager
def translated(target: str = "MongoDB") -> Iterator[None]:
    try:
        yield
    except pymongo.errors.PyMongoError as e:
        raise translate(e, target) from None


def guarded(fn: F) -> F:
    """Decorate a store method so pymongo errors leave it as Strix errors."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except pymongo.errors.PyMongoError as e:
            target = getattr(getattr(self, "target", None), "redacted", "MongoDB")
            raise translate(e, target) from None

    return wrapper  # type: ignore[return-value]


def guard_methods(cls: type) -> type:
    """Wrap every public method of ``cls``, inherited ones too, with :func:`guarded`.

    hyperopt's own ``MongoTrials.refresh`` and friends talk to pymongo as well, so the
    inherited methods must not leak pymongo errors either (one place, no forgetting).
    """
    for name in dir(cls):
        value = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, guarded(value))
    return cls


_URI_SETS_W = re.compile(r"[?&]w=", re.IGNORECASE)
WTIMEOUT_MS = 30_000  # a majority write that a failover stalls errors out instead of hanging


def client_options(uri: str) -> dict[str, Any]:
    """Replica-set semantics that the URI does not already choose.

    ``retryWrites`` is left to the URI (pymongo retries a write once across a failover, and
    the server applies it at most once). The write concern defaults to ``majority``: an
    acknowledged ``finish`` then survives a failover; on a standalone server (and the
    embedded nx-27017) it is the same as ``w=1``. A ``w=`` in the URI wins.
    """
    if _URI_SETS_W.search(uri):
        return {}
    return {"w": "majority", "wTimeoutMS": WTIMEOUT_MS}


def make_client(target: MongoTarget, timeout_ms: int | None = None) -> pymongo.MongoClient:
    timeout = timeout_ms or defaults.SERVER_SELECTION_TIMEOUT_MS
    with translated(target.redacted):
        return pymongo.MongoClient(
            target.uri,
            serverSelectionTimeoutMS=timeout,
            connectTimeoutMS=timeout,
            appname="strix",
            **client_options(target.uri),
        )
