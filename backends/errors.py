"""Errors every layer speaks.

A `BackendError` carries the name of the source and a reason a person can read
("connection refused at 127.0.0.1:5432"), never a traceback. Reasons pass through
`redact()` so that a secret that slipped into an exception text (a DSN with a
password, a token in a URL) never reaches the screen, logs or the audit trail.
"""

from __future__ import annotations

import re
from typing import Any

# user:password@host in URLs / DSNs, and key=value pairs that look secret. The parts are bounded:
# an unbounded scheme made redact() quadratic on a long run of letters (1 MB of command output
# took minutes: each offset scanned to the end looking for "://").
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<user>[^:/@\s]{0,256}):(?P<pw>[^@/\s]{1,512})@"
)
_SECRET_PAIRS = re.compile(
    r"(?i)\b(?P<k>password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|routing[_-]?key|authorization)"
    r"(?P<sep>\s*[=:]\s*)(?P<v>\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")

# Values registered at runtime (secrets loaded from config) are replaced verbatim.
_KNOWN_SECRETS: set[str] = set()

MASK = "********"


def register_secret(value: str) -> None:
    """Remember a secret value so that `redact` removes it wherever it appears."""
    if value and len(value) >= 4:
        _KNOWN_SECRETS.add(value)


def redact(text: str) -> str:
    """Remove credentials from free text (exception messages, command output)."""
    if not text:
        return text
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SECRET_PAIRS.sub(lambda m: f"{m['k']}{m['sep']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return text


class WarroomError(Exception):
    """Base of warroom's own errors."""


class BackendError(WarroomError):
    """An outside system could not be read or changed.

    `source` names the configured source ("postgres.main", "chain.mainnet"),
    `reason` says what went wrong in words.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = redact(str(reason))
        super().__init__(f"{source}: {self.reason}")


class ConfigError(WarroomError):
    """The configuration is invalid. Names the file, line, key and what was expected."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.expected = expected
        self.message = redact(message)
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.key:
            parts.append(f"key {self.key!r}")
        text = ": ".join(parts) + ": " + self.message
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class ActionRefused(WarroomError):
    """An action was refused before anything was touched (read-only, bad input, guard)."""

    def __init__(self, action: str, reason: str, *, ask: bool = False,
                 suggest: dict[str, Any] | None = None, focus: str | None = None,
                 nothing: bool = False) -> None:
        self.action = action
        self.reason = redact(reason)
        self.nothing = nothing  # the state does not call for it (nothing to do): no form can change that
        self.ask = ask  # only input is missing: the console asks for it (a question, not an error)
        self.suggest = dict(suggest or {})  # values the form opens with
        self.focus = focus  # the field the question is about (the form's cursor starts there)
        super().__init__(f"{action}: refused: {self.reason}")


class LockHeld(ActionRefused):
    """Another operator holds the lock on this target."""

    def __init__(self, action: str, target: str, holder: str) -> None:
        self.target = target
        self.holder = holder
        super().__init__(action, f"{target} is locked by {holder}")


def describe_exception(exc: BaseException) -> str:
    """A one-line, human reason for an arbitrary exception (no traceback, secrets redacted)."""
    if isinstance(exc, BackendError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused{_addr(exc)}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.strerror:
        return redact(f"{exc.strerror}{_addr(exc)}")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return redact(f"{name}: {text}" if text else name)


def _addr(exc: OSError) -> str:
    fn = getattr(exc, "filename", None)
    return f" at {fn}" if fn else ""
