"""Strix's own exceptions.

Every failure a user can cause or meet ends as one of these, with a message that says
what was received, what was expected and how to fix it. Entry points print the message
on one line instead of a traceback.
"""


class StrixError(Exception):
    """Base class: entry points catch this and print ``str(exc)`` only."""


class ConfigError(StrixError):
    """A flag, environment variable or parameter has a value Strix cannot use."""


class DataError(StrixError):
    """The dataset is missing, truncated or corrupt, or the cache cannot be written."""


class ModelError(StrixError):
    """A model cannot be built for the given parameters (e.g. too deep for the image)."""


class StoreError(StrixError):
    """MongoDB answered with an error. Messages never contain a password."""


class StoreUnavailable(StoreError):
    """MongoDB could not be reached (down, wrong host, timeout)."""


class StoreAuthError(StoreError):
    """MongoDB refused the credentials."""


class StoreConfigError(StoreError, ConfigError):
    """A MongoDB URI or store option that Strix cannot use (both kinds of error at once)."""


class StoreUsageError(StoreError, ValueError):
    """A store call with arguments hyperopt's API refuses with ValueError."""


class MissingAttachment(StoreError, KeyError):
    """An attachment that is not there: a KeyError for mapping code, a StoreError for ours."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "attachment not found"


class JobError(StrixError):
    """A job document cannot be run: missing or garbled spec, wrong Strix version."""


class StudyBusy(StrixError):
    """Another live coordinator holds the study (one coordinator per study at a time)."""
