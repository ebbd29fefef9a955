"""Errors that reach users: each says what was wrong and how to fix it.

The CLI prints ``error: <message>`` and exits non-zero; the serving layer maps
:class:`SslzooError` subclasses onto HTTP status codes (``http_status``).
"""

from __future__ import annotations


class SslzooError(Exception):
    """Base class for user-facing errors (bad input, missing files, bad config)."""

    http_status: int = 400
    short_name: str = "BadRequest"


class DataError(SslzooError):
    """A dataset, image or label file is missing, unreadable or malformed."""

    short_name = "DataError"


class ConfigError(SslzooError):
    """An option, name or configuration value is invalid."""

    short_name = "ConfigError"


class NotFoundError(SslzooError):
    """A named model, dataset or file does not exist."""

    http_status = 404
    short_name = "NotFound"


class TooLargeError(SslzooError):
    """An input exceeds a configured size or pixel limit."""

    http_status = 413
    short_name = "PayloadTooLarge"
