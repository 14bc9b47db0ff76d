"""Converters: each takes the (interpolated) TOML value and returns the model value or raises _Invalid."""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from backends.config.base import (
    _ENV_NAME_RE,
    _NAME_RE,
    BAD,
    Conv,
    _conv,
    _Invalid,
    _SkipBad,
    _tname,
    expected_of,
    show_of,
)
from backends.config.limits import (
    COUNT_LIMITS,
    DURATION_LIMITS,
    PORT_RANGE,
    RECORD_LIMITS,
    SIGNER_LIMITS,
    SIZE_LIMITS,
    _fmt_count,
    _fmt_size,
    _range_expected,
)
from backends.config.types import (
    IDENT_RE,
    THEME_ALIASES,
    THEMES,
    Amount,
    Ident,
    Secret,
    TokenAmount,
    _register_url_password,
    parse_amount,
    parse_size,
)
from backends.engine.playbooks import ACTION_NAMESPACES, ACTION_SINGLE
from backends.model import Severity
from backends.units import format_duration, parse_duration

if TYPE_CHECKING:
    from backends.config.loader import _Loader

_T = TypeVar("_T")

_ADDRESS_RE = re.compile(r"^(0x[0-9a-fA-F]{40}|N[1-9A-HJ-NP-Za-km-z]{33})$")
_ADDRESS_EXPECTED = "a 0x address (40 hex digits) or a Neo N3 address (N...)"


def c_str(*, pattern: re.Pattern[str] | None = None, choices: Iterable[str] | None = None,
          empty: bool = False, expected: str | None = None) -> Conv[str]:
    allowed = tuple(choices) if choices else None
    exp = expected or (" | ".join(allowed) if allowed else "a string")

    @_conv(exp)
    def conv(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid(f"expected a string, got {_tname(v)}", exp)
        if not v and not empty:
            raise _Invalid("must not be empty", exp)
        if allowed and v not in allowed:
            raise _Invalid(f"invalid value {v!r}", "one of: " + ", ".join(allowed))
        if pattern is not None and not pattern.match(v):
            raise _Invalid(f"invalid value {v!r}", exp)
        return v

    return conv


def c_opt(conv: Conv[_T]) -> Conv[_T | None]:
    """'' (e.g. an unset ${VAR:-}) means None."""

    @_conv(expected_of(conv) or "a value or an empty string", show_of(conv))
    def opt(v: Any) -> _T | None:
        if v == "":
            return None
        return conv(v)

    return opt


def c_int(*, min: int | None = None, max: int | None = None) -> Conv[int]:
    if min is not None and max is not None:
        exp = f"an integer between {_fmt_count(min)} and {_fmt_count(max)}"
    else:
        exp = "an integer" + (f" >= {min}" if min is not None else "") + (f" <= {max}" if max is not None else "")

    @_conv(exp)
    def conv(v: Any) -> int:
        n: int
        if isinstance(v, int) and not isinstance(v, bool):
            n = v
        elif isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            n = int(v)  # from an interpolated ${VAR}
        else:
            raise _Invalid(f"expected an integer, got {_tname(v)} {v!r}", exp)
        if (min is not None and n < min) or (max is not None and n > max):
            raise _Invalid(f"{n} is out of range", exp)
        return n

    return conv


def c_number(*, min: float | None = None, max: float | None = None) -> Conv[float]:
    exp = "a number" + (f" >= {min:g}" if min is not None else "") + (f" <= {max:g}" if max is not None else "")

    @_conv(exp)
    def conv(v: Any) -> float:
        x: int | float | None
        if isinstance(v, int | float) and not isinstance(v, bool):
            x = v
        else:
            try:
                x = float(v) if isinstance(v, str) else None
            except ValueError:
                x = None
            if x is None:
                raise _Invalid("expected a number", exp)
        if x != x or x in (float("inf"), float("-inf")):
            raise _Invalid(f"{x} is not a finite number", exp)
        if (min is not None and x < min) or (max is not None and x > max):
            raise _Invalid(f"{x:g} is out of range", exp)
        return float(x)

    return conv


@_conv("true or false")
def c_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    raise _Invalid(f"expected a boolean, got {_tname(v)} {v!r}", "true or false")


def _show_duration(seconds: float) -> str:
    return f'"{format_duration(seconds)}"'


def _show_size(n: int) -> str:
    return f'"{_fmt_size(n)}"' if n else "0"


_DURATION_EXPECTED = 'a duration like "500ms", "10s", "5m", "2h", "1d" or a number of seconds'


def c_duration(key: str) -> Conv[float]:
    """A duration within DURATION_LIMITS[key]."""
    lo, hi = DURATION_LIMITS[key]
    rng = _range_expected("a duration", format_duration(lo), format_duration(hi))
    exp = f"{_DURATION_EXPECTED}, {rng[len('a duration '):]}"

    @_conv(exp, _show_duration)
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise _Invalid(f"expected a duration, got {_tname(v)}", exp)
        try:
            d = parse_duration(v)
        except ValueError as e:
            raise _Invalid(str(e), exp) from None
        if not lo <= d <= hi:
            shown = f"{v!r}" if isinstance(v, str) else f"{v:g}"
            raise _Invalid(f"{shown} is {'too short' if d < lo else 'too long'}", rng)
        return d

    return conv


def c_count(key: str) -> Conv[int]:
    """An integer within COUNT_LIMITS[key]."""
    lo, hi = COUNT_LIMITS[key]
    return c_int(min=lo, max=hi)


_AMOUNT_EXPECTED = 'an amount like "5 ether", "0.5 gwei", "1000 wei", "12.5 GAS", "3 NEO" or an integer'


@_conv(_AMOUNT_EXPECTED)
def c_amount(v: Any) -> Amount:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Invalid(f"expected an amount, got {_tname(v)}", _AMOUNT_EXPECTED)
    try:
        return parse_amount(v)
    except ValueError as e:
        raise _Invalid(str(e), _AMOUNT_EXPECTED) from None


_TOKEN_AMOUNT_EXPECTED = ('an amount of the token like "1000 USDC" (its symbol, whole tokens) '
                          'or an integer in its smallest unit')
_TOKEN_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z][A-Za-z0-9]{0,15})\s*$")


@_conv(_TOKEN_AMOUNT_EXPECTED)
def c_token_amount(v: Any) -> Amount | TokenAmount:
    """A token balance's minimum: an integer (smallest unit) or "N SYMBOL" in whole tokens."""
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Invalid(f"expected an amount, got {_tname(v)}", _TOKEN_AMOUNT_EXPECTED)
    if isinstance(v, int) or re.fullmatch(r"\s*\d+\s*", v):
        n = int(v)
        if n < 0:
            raise _Invalid(f"invalid amount {v!r}: negative", _TOKEN_AMOUNT_EXPECTED)
        return Amount(n)
    m = _TOKEN_AMOUNT_RE.match(v)
    if not m:
        raise _Invalid(f"invalid amount {v!r}", _TOKEN_AMOUNT_EXPECTED)
    unit = m.group(2)
    if unit.lower() in ("ether", "eth", "gwei", "wei"):  # token balances are on EVM chains only
        raise _Invalid(f"minimum {v!r} is in ETH, the native coin, but this balance is of a token",
                       _TOKEN_AMOUNT_EXPECTED)
    return TokenAmount(Decimal(m.group(1)), unit.upper() if unit.isupper() else unit)


_SIZE_EXPECTED = 'a size like "500MB", "2GB", "512KB" or a number of bytes'


def c_size(key: str) -> Conv[int]:
    """A size within SIZE_LIMITS[key]."""
    lo, hi = SIZE_LIMITS[key]
    rng = _range_expected("a size", _fmt_size(lo), _fmt_size(hi))
    exp = f"{_SIZE_EXPECTED}, {rng[len('a size '):]}"

    @_conv(exp, _show_size)
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise _Invalid(f"expected a size, got {_tname(v)}", exp)
        try:
            n = parse_size(v)
        except ValueError as e:
            raise _Invalid(str(e), exp) from None
        if not lo <= n <= hi:
            shown = f"{v!r}" if isinstance(v, str) else str(v)
            raise _Invalid(f"{shown} is {'too small' if n < lo else 'too large'}", rng)
        return n

    return conv


_IDENT_EXPECTED = "an SQL identifier matching ^[A-Za-z_][A-Za-z0-9_]*$, optionally schema.table"


@_conv(_IDENT_EXPECTED)
def c_ident(v: Any) -> Ident:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _IDENT_EXPECTED)
    if not IDENT_RE.match(v):
        raise _Invalid(f"invalid SQL identifier {v!r}", _IDENT_EXPECTED)
    return Ident(v)


@_conv("a regular expression")
def c_regex(v: Any) -> re.Pattern[str]:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "a regular expression")
    try:
        return re.compile(v)
    except re.error as e:
        raise _Invalid(f"invalid regular expression {v!r}: {e}", "a valid Python regular expression") from None


@_conv("P0, P1, P2 or P3")
def c_severity(v: Any) -> Severity:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "P0, P1, P2 or P3")
    try:
        return Severity.parse(v)
    except ValueError:
        raise _Invalid(f"invalid severity {v!r}", "P0, P1, P2 or P3") from None


def c_secret(*, schemes: tuple[str, ...] | None = None, empty: bool = False,
             url_parts: bool = False) -> Conv[Secret]:
    exp = ("a URL starting with " + " or ".join(f"{s}://" for s in schemes)) if schemes else "a string"

    @_conv(exp)
    def conv(v: Any) -> Secret:
        if not isinstance(v, str):
            raise _Invalid(f"expected a string, got {_tname(v)}", exp)
        if not v and not empty:
            raise _Invalid("must not be empty", exp)
        if v and schemes and not any(v.startswith(f"{s}://") for s in schemes):
            scheme = v.split("://", 1)[0] if "://" in v else None
            what = f"unsupported scheme {scheme!r}" if scheme else "not a URL"
            raise _Invalid(what + " (value hidden: it is a secret)", exp)
        if v and schemes:
            _check_port(v, secret=True)
        return Secret(v, url_parts=url_parts)

    return conv


def c_list(conv: Conv[_T], *, min_len: int = 0, drop_empty: bool = False, expected: str | None = None,
           allow_single: bool = False) -> Conv[tuple[_T, ...]]:
    exp = expected or f"an array of {expected_of(conv) or 'values'}"
    item_show = show_of(conv)
    show = None if item_show is None else (lambda t: "[" + ", ".join(item_show(x) for x in t) + "]")

    @_conv(exp, show)
    def lst(v: Any) -> tuple[_T, ...]:
        if allow_single and isinstance(v, str):
            v = [v]  # a single value is a one-element list
        if not isinstance(v, list):
            raise _Invalid(f"expected an array, got {_tname(v)}", exp)
        out: list[_T] = []
        for i, item in enumerate(v):
            if drop_empty and item == "":
                continue
            if item is BAD:
                raise _SkipBad()  # already reported (interpolation)
            try:
                out.append(conv(item))
            except _Invalid as e:
                raise _Invalid(e.message, e.expected, (i,) + e.sub) from None
        if len(out) < min_len:
            raise _Invalid(f"needs at least {min_len} element(s)", exp)
        return tuple(out)

    return lst


def _str_list(*, pattern: re.Pattern[str] | None = None, choices: Iterable[str] | None = None,
              empty: bool = False, expected: str | None = None) -> Conv[tuple[str, ...]]:
    return c_list(c_str(pattern=pattern, choices=choices, empty=empty, expected=expected))


# [[services]] kind = "pm2": an app name pm2 reads as that app (not "all", not a pm_id, not an option)
_PM2_APP = re.compile(r"^(?!all$)(?!\d+$)[A-Za-z0-9_.][A-Za-z0-9_.:@-]{0,127}$")
_PM2_APP_EXPECTED = "a pm2 app name (letters, digits, _ . : @ -; not 'all', not a number)"


def c_path(ld: _Loader) -> Conv[Path]:
    @_conv("a file path")
    def conv(v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise _Invalid(f"expected a path, got {_tname(v)}", "a file path")
        return ld.resolve_path(v)

    return conv


def c_glob(ld: _Loader) -> Conv[str]:
    @_conv("a file path or glob")
    def conv(v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise _Invalid(f"expected a path, got {_tname(v)}", "a file path or glob")
        return ld.resolve_glob(v)

    return conv


@_conv(_ADDRESS_EXPECTED)
def c_address(v: Any) -> str:
    if not isinstance(v, str) or not _ADDRESS_RE.match(v):
        shown = repr(v) if isinstance(v, str) else _tname(v)
        raise _Invalid(f"invalid address {shown}", _ADDRESS_EXPECTED)
    return v



_THEME_EXPECTED = (" | ".join(THEMES) + " (or an alias: "
                   + ", ".join(f"{a} = {n}" for a, n in THEME_ALIASES.items()) + ")")


@_conv(_THEME_EXPECTED)
def c_theme(v: Any) -> str:
    """A theme name or alias (any case) -> the canonical theme name."""
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _THEME_EXPECTED)
    key = v.strip().lower()
    key = THEME_ALIASES.get(key, key)
    if key not in THEMES:
        hint = difflib.get_close_matches(key, [*THEMES, *THEME_ALIASES], n=1)
        raise _Invalid(f"unknown theme {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                       _THEME_EXPECTED)
    return key


c_name = c_str(pattern=_NAME_RE, expected="a name of letters, digits, '_', '-' or '.'")
c_text = c_str()
c_env_name = c_str(pattern=_ENV_NAME_RE, expected="an environment variable name")


def c_url(*schemes: str) -> Conv[str]:
    exp = "a URL starting with " + " or ".join(f"{s}://" for s in schemes)

    @_conv(exp)
    def conv(v: Any) -> str:
        if not isinstance(v, str) or not any(v.startswith(f"{s}://") for s in schemes):
            raise _Invalid(f"invalid URL {v!r}", exp)
        _register_url_password(v)
        _check_port(v)
        return v

    return conv


_NETLOC_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)")
_HOST_PORT_RE = re.compile(r"(?:\[[^\]]*\]|[^:\[\]]*):(\d+)")


def url_ports(url: str) -> list[int]:
    """The numeric ports written in a URL's authority (several for a multi-host DSN)."""
    m = _NETLOC_RE.match(url)
    if not m:
        return []
    out: list[int] = []
    for host in m.group(1).split(","):
        hp = _HOST_PORT_RE.fullmatch(host)
        if hp:
            out.append(int(hp.group(1)))
    return out


def _check_port(url: str, *, secret: bool = False) -> None:
    lo, hi = PORT_RANGE
    for port in url_ports(url):
        if not lo <= port <= hi:
            raise _Invalid(f"port {port} is out of range" + (" (the rest of the URL is hidden: it is a secret)" if secret else ""),
                           f"a port between {lo} and {hi}")


_ACTION_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_ACTION_ID_EXPECTED = ("an action id like service.restart, orders.fix, escalate or command.NAME (an [[actions]] "
                       "name); namespaces: " + ", ".join(ACTION_NAMESPACES))


def c_action_id(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", _ACTION_ID_EXPECTED)
    m = _ACTION_ID_RE.match(v)
    head = v.split(".", 1)[0]
    if not m or (m.group(1) is None and v not in ACTION_SINGLE) or (m.group(1) and head not in ACTION_NAMESPACES):
        hint = difflib.get_close_matches(head, ACTION_NAMESPACES + ACTION_SINGLE, n=1)
        raise _Invalid(f"invalid action id {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint and hint[0] != head
                                                      else ""), _ACTION_ID_EXPECTED)
    return v


def _c_template(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"expected a string, got {_tname(v)}", "a string")
    try:
        list(string.Formatter().parse(v))
    except ValueError as e:
        raise _Invalid(f"bad placeholder in {v!r}: {e}", "{name} placeholders; {{ and }} for braces") from None
    for _, fname, _, _ in string.Formatter().parse(v):
        if fname is not None and not _ENV_NAME_RE.match(fname):
            raise _Invalid(f"bad placeholder {{{fname}}} in {v!r}", "{name} with name of letters, digits, '_'")
    return v


def _c_priority_steps(v: Any) -> tuple[int, ...]:
    exp = "priority_steps = [0, 3, 6, 9], distinct integers 0..255 (kombu's priority_steps)"
    if (not isinstance(v, list) or not v
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)
            or len(set(v)) != len(v)):
        raise _Invalid(f"invalid priority_steps {v!r}", exp)
    return tuple(v)


def _c_thresholds(v: Any) -> tuple[int, int, int]:
    exp = "thresholds = [warn, high, critical], three increasing positive integers"
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _Invalid(f"invalid thresholds {v!r}", exp)
    if not (0 < v[0] < v[1] < v[2]):
        raise _Invalid(f"thresholds not increasing: {v!r}", exp)
    lo, hi = COUNT_LIMITS["queues.thresholds"]
    if not all(lo <= x <= hi for x in v):
        raise _Invalid(f"thresholds out of range: {v!r}",
                       f"three increasing integers between {_fmt_count(lo)} and {_fmt_count(hi)}")
    return (v[0], v[1], v[2])


@_conv("an array")
def _c_any_list(v: Any) -> tuple[Any, ...]:
    if not isinstance(v, list):
        raise _Invalid(f"expected an array, got {_tname(v)}", "an array")
    return tuple(v)


def _c_bounded(lo: float, hi: float, parse: Callable[[str | int | float], float], fmt: Callable[[float], str],
               kind: str, low_word: str = "too small", high_word: str = "too large") -> Conv[float]:
    """A duration or size (a string or a number) between lo and hi."""
    exp = _range_expected(f"a {kind}", fmt(lo), fmt(hi))

    @_conv(exp, lambda n: f'"{fmt(n)}"')
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise _Invalid(f"expected a {kind}, got {_tname(v)}", exp)
        try:
            n = parse(v)
        except ValueError as e:
            raise _Invalid(str(e), exp) from None
        if not lo <= n <= hi:
            raise _Invalid(f"{v!r} is {low_word if n < lo else high_word}", exp)
        return n

    return conv


def _c_signer_duration(name: str) -> Conv[float]:
    """[[chain.X.signers]] runway_min / spend_window within SIGNER_LIMITS (kept in the section)."""
    lo, hi = SIGNER_LIMITS[name]
    return _c_bounded(lo, hi, parse_duration, format_duration, "duration", "too short", "too long")


def _c_record(name: str, parse: Callable[[str | int | float], float], fmt: Callable[[float], str],
              kind: str) -> Conv[float]:
    """[record] max_size / max_age within RECORD_LIMITS."""
    lo, hi = RECORD_LIMITS[name]
    return _c_bounded(lo, hi, parse, fmt, kind)
