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
from urllib.parse import unquote_plus, urlsplit

import pymongo
import pymongo.errors
from pymongo import uri_parser

from shared.config import defaults
from shared.errors import StoreAuthError, StoreConfigError, StoreError, StoreUnavailable

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_USERINFO = re.compile(r"(?P<scheme>mongo(?:db)?(?:\+srv)?://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")
_SECRETS: set[str] = set()


def redact(text: str) -> str:
    """Replace every ``user:password@`` userinfo and every known password with ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


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
    if parts.password:
        _SECRETS.update({parts.password, unquote_plus(parts.password)})
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
