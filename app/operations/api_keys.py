"""API keys for the inference routes, read from a file that may change while the service runs.

The file holds one `name:key` per line (blank lines and `# comments` ignored) or a JSON object
`{"name": "key", ...}`. Names label the metrics and logs; keys are never logged. The file is
looked at (one `stat`) on every check and re-read when it changed, so keys rotate without a
restart: add the new key, move clients over, remove the old one. Replace the file atomically
(write a temporary file and rename it, as Kubernetes does for a mounted secret).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from pathlib import Path

from prometheus_client import Counter

from app.operations.rate_limit import RateLimiter

log = logging.getLogger(__name__)

KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_KEY_LENGTH = 16


class ApiKeysError(Exception):
    """The key file is missing or malformed; the message names the file and the problem."""


def parse_keys(text: str, source: Path) -> dict[str, bytes]:
    """`name:key` lines or a JSON object -> {name: key bytes}; raises ApiKeysError naming the line."""
    pairs: list[tuple[str, object, str]] = []
    if text.lstrip()[:1] in ("{", "["):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiKeysError(f"{source}: not valid JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise ApiKeysError(f"{source}: the JSON must be an object of name: key")
        pairs = [(str(name), key, f"key {name!r}") for name, key in document.items()]
    else:
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, separator, value = line.partition(":")
            if not separator:
                raise ApiKeysError(f"{source} line {number}: expected 'name:key'")
            pairs.append((name.strip(), value.strip(), f"line {number}"))
    keys: dict[str, bytes] = {}
    for name, key, where in pairs:
        if not KEY_NAME.fullmatch(name):
            raise ApiKeysError(f"{source} {where}: a key name is 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise ApiKeysError(f"{source} {where}: a key must be at least {MIN_KEY_LENGTH} characters")
        if name in keys:
            raise ApiKeysError(f"{source} {where}: the name {name!r} is used twice")
        keys[name] = key.encode()
    return keys


class ApiKeys:
    """The keys in force, refreshed from the file when its mtime, size or inode changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._keys: dict[str, bytes] = {}
        self._refresh(strict=True)

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    def identify(self, presented: str) -> str | None:
        """The name of the key presented, or None. Every key is compared, in constant time each."""
        self._refresh(strict=False)
        candidate = presented.encode()
        found = None
        for name, key in self._keys.items():
            if secrets.compare_digest(candidate, key):
                found = name
        return found

    def _refresh(self, strict: bool) -> None:
        try:
            status = self.path.stat()
        except OSError as exc:
            self._fail(ApiKeysError(f"{self.path}: cannot read the API key file ({exc})"), strict)
            return
        signature = (status.st_mtime_ns, status.st_size, status.st_ino)
        if signature == self._signature:
            return
        with self._lock:
            if signature == self._signature:
                return
            try:
                keys = parse_keys(self.path.read_text(), self.path)
            except (OSError, UnicodeDecodeError) as exc:
                self._fail(ApiKeysError(f"{self.path}: cannot read the API key file ({exc})"), strict)
                return
            except ApiKeysError as exc:
                self._signature = signature  # not re-parsed until it changes again
                self._fail(exc, strict)
                return
            self._keys, self._signature = keys, signature
        log.info("API keys loaded from %s: %s", self.path, ", ".join(self.names) or "none")

    def _fail(self, exc: ApiKeysError, strict: bool) -> None:
        if strict:
            raise exc
        # A broken rotation must not lock every client out: the previous keys stay in force.
        log.error("%s; keeping the previous keys", exc)


class KeyRefusedError(Exception):
    """A call refused by the key check: `reason` is the outcome label (missing, refused,
    rate_limited); `retry_after` the whole seconds to wait when rate-limited."""

    def __init__(self, reason: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


def admit(keys: ApiKeys, limiter: RateLimiter | None, counter: Counter, presented: str | None) -> str:
    """The name of the key `presented`, counted by outcome; raises KeyRefusedError. The same check
    for every protocol, so a key's rate is one allowance over HTTP and gRPC."""
    if not presented:
        counter.labels("", "missing").inc()
        raise KeyRefusedError("missing", "this call needs an API key")
    name = keys.identify(presented)
    if name is None:
        counter.labels("", "refused").inc()
        raise KeyRefusedError("refused", "unknown API key")
    if limiter is not None:
        wait = limiter.acquire(name)
        if wait:
            counter.labels(name, "rate_limited").inc()
            raise KeyRefusedError(
                "rate_limited",
                f"API key {name!r} is over its limit of {limiter.rate:g} requests per second; "
                f"retry in {wait} s",
                wait,
            )
    counter.labels(name, "accepted").inc()
    return name
