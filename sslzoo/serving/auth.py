"""Deployer-supplied API keys for the REST front (CONTRACTS.md section 2).

The key file holds one key per line (blank lines and lines starting with ``#`` are skipped;
surrounding whitespace is stripped). Several keys may be valid at once, so a key is rotated
without downtime: add the new key, move clients over, remove the old one. Keys never expire by
themselves. In memory only ``sha256(key)`` is kept; a presented key is hashed and compared with
every stored digest by :func:`hmac.compare_digest` (constant time, and all digests are always
compared, so timing tells nothing about which key or prefix matched).

The file is re-read when its modification time, size or inode changes (checked at most once per
``check_interval`` seconds, on a request) and on :meth:`KeyStore.reload` (``sslzoo serve`` calls it
on SIGHUP). A reload that finds the file missing, unreadable or empty keeps the previous keys
and records the problem in :attr:`KeyStore.last_error`, so a half-written file never locks
everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from sslzoo.errors import ConfigError

#: Environment variable naming the key file when ``--api-keys`` is not given.
KEYS_ENV = "SSLZOO_API_KEYS_FILE"
#: Shortest key accepted (characters): a short key can be guessed.
MIN_KEY_LENGTH = 16

logger = logging.getLogger("sslzoo.serving")


def digest(key: str) -> bytes:
    """``sha256`` of the UTF-8 key: what is kept in memory and compared."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(text: str, source: str = "key file") -> list[str]:
    """Keys of a key file: one per line, ``#`` comments and blank lines skipped; raises on a bad key."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key) or not key.isprintable():
            raise ConfigError(
                f"{source}, line {number}: a key must be at least {MIN_KEY_LENGTH} printable characters without "
                "spaces (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"{source} holds no key; write one key per line")
    return keys


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def new_key_file(path: str | Path) -> Path:
    """Write a file with one fresh random key (mode 0600) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# sslzoo API keys: one per line; clients send 'Authorization: Bearer <key>'\n")
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


class KeyStore:
    """The valid keys of a key file, as sha256 digests; re-read when the file changes."""

    def __init__(self, path: str | Path, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._load(strict=True)

    @property
    def count(self) -> int:
        """Number of valid keys."""
        return len(self._digests)

    def _file_stamp(self) -> tuple[int, int, int]:
        info = self.path.stat()
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _load(self, strict: bool) -> bool:
        try:
            stamp = self._file_stamp()
            keys = parse_keys(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if strict:
                raise ConfigError(
                    f"cannot read the API key file {self.path}: {message}; pass --api-keys FILE "
                    f"(or set ${KEYS_ENV}) with one key per line"
                ) from exc
            self.last_error = message
            logger.warning("API key file %s not reloaded (%s); keeping the %d previous key(s)", self.path, message,
                           len(self._digests))  # fmt: skip
            return False
        with self._lock:
            self._digests = tuple(digest(key) for key in dict.fromkeys(keys))
            self._stamp = stamp
            self.last_error = None
        return True

    def reload(self) -> bool:
        """Re-read the file now; True when the new keys are in effect."""
        return self._load(strict=False)

    def maybe_reload(self) -> None:
        """Re-read the file when its mtime/size/inode changed (checked at most every ``check_interval`` s)."""
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        try:
            stamp = self._file_stamp()
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._load(strict=False)

    def valid(self, token: str | None) -> bool:
        """True when ``token`` is one of the keys (constant-time comparison against every digest)."""
        self.maybe_reload()
        if not token:
            return False
        presented = digest(token)
        match = False
        for stored in self._digests:
            match |= hmac.compare_digest(presented, stored)
        return match
