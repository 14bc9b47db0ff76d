"""Units and safe display, one of each: durations (parse, format), secrets (`reveal`) and URLs
(`display_url`). Pure functions, no imports of ours but `backends.errors`.

    parse_duration("1h30m") == 5400.0          # config, CLI flags, action parameters
    format_duration(5400) == "1h30m"           # compact, as written in a config
    format_age(3725) == "1h02m"                # two units, zero padded: ages and running times
    reveal(secret) -> the plain text            # a config `Secret`, a str, or None ("")
    display_url("https://u:pw@h:8443/x?k=1") == "https://u:********@h:8443/x?…"
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from backends.errors import redact

__all__ = ["display_url", "format_age", "format_duration", "parse_duration", "reveal", "reveal_value"]

_LONG_SEGMENT = re.compile(r"/[A-Za-z0-9_-]{20,}")

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """'500ms', '10s', '5m', '2h', '1d', '1h30m', a number of seconds or a timedelta -> seconds.

    Raises ValueError for anything else, a negative value, NaN or infinity."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}")
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    compact = text.replace(" ", "")
    if not compact:
        raise ValueError("invalid duration ''")
    for m in _DURATION_RE.finditer(compact):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(compact):
        raise ValueError(f"invalid duration {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """Short human text for a duration: 0.5s -> '500ms', 600 -> '10m', 5400 -> '1h30m'."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    s = round(seconds)
    if s == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


def format_age(seconds: float | None, *, none: str = "?", signed: bool = False) -> str:
    """An age or a running time in two units, zero padded: 42s, 5m07s, 2h03m, 3d04h.

    The one duration formatter of tables, findings and briefs (widgets.common.fmt_duration
    and incidents.fmt_duration are this with `none="-"`). None or NaN -> `none`; a negative
    value is 0, or with `signed` keeps its sign ("-3m12s": overdue)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return none
    sign = "-" if signed and seconds < 0 else ""
    s = int(abs(seconds)) if signed else max(0, int(seconds))
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{sign}{s // 86400}d{(s % 86400) // 3600:02d}h"


def reveal(value: Any) -> str:
    """The plain text of a value that may be a config `Secret` (None -> ''). The one reveal
    of the code base: adapters import it (http, notify, probe, alertmanager, redis, ...)."""
    if value is None:
        return ""
    if hasattr(value, "reveal"):
        return str(value.reveal())
    return str(value)


def reveal_value(value: Any) -> Any:
    """The real value of a config secret, not made a string (a secret list stays a list);
    anything else as it is."""
    if isinstance(value, dict | str | bytes) or value is None:
        return value
    for attr in ("reveal", "get_secret_value"):
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                return fn()
            except TypeError:
                continue
    return value


def display_url(url: Any) -> str:
    """scheme://host:port/path, a password masked, a path segment that looks like a key (20+
    letters, digits, - or _) masked, the query string elided (tokens live there); registered
    secrets redacted. A `Secret` is revealed first, then made safe. The one display_url."""
    plain = reveal(url)
    try:
        p = urlsplit(plain)
        port = p.port
    except ValueError:
        return redact(plain)
    host = p.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    if p.username or p.password:
        user = p.username or ""
        netloc = f"{user}:********@{netloc}" if p.password else f"{user}@{netloc}"
    path = _LONG_SEGMENT.sub("/***", p.path)  # API keys in the path (/v2/<key>, /hooks/<token>)
    return redact(f"{p.scheme}://{netloc}{path}" + ("?…" if p.query else ""))
