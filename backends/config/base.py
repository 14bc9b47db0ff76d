"""What the loader and the converters share: the invalid-value marker, the error a converter
raises, and the `expected` text each converter carries."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Path_ = tuple[str | int, ...]
_T = TypeVar("_T")
# A converter: the (interpolated) TOML value -> the model value, or raises _Invalid. Its input is
# whatever the TOML held (genuinely untyped: each converter narrows it with isinstance); `Conv[int]`
# says what it returns. `Converter` is any of them (the schema's keys hold converters of every type).
Conv = Callable[[Any], _T]
Converter = Conv[Any]
_F = TypeVar("_F", bound=Callable[..., Any])
_DC = TypeVar("_DC", bound="DataclassInstance")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|routing[_-]?key|auth)")


class _Bad:
    """Marks a value that already produced an error (so it is not reported twice)."""

    _instance: _Bad | None = None

    def __new__(cls) -> _Bad:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Any = _Bad()


class _Required:
    """The default of a key that must be given."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()


class _Invalid(Exception):
    def __init__(self, message: str, expected: str | None = None, sub: Path_ = ()) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.sub = sub


class _SkipBad(_Invalid):
    def __init__(self) -> None:
        super().__init__("")


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)


def _conv(expected: str, show: Callable[[Any], str] | None = None) -> Callable[[_F], _F]:
    """Marks a converter with the text of what it expects (shown with a missing key) and, when
    its values are better written otherwise than Python prints them (a duration: "2s", not 2.0),
    how a value is written in TOML (`show`: `warroom check --keys` shows defaults so)."""

    def deco(fn: _F) -> _F:
        vars(fn)["expected"] = expected
        if show is not None:
            vars(fn)["show"] = show
        return fn

    return deco


def expected_of(conv: object) -> str | None:
    exp = getattr(conv, "expected", None)
    return exp if isinstance(exp, str) else None


def show_of(conv: object) -> Callable[[Any], str] | None:
    """How the converter's values are written in TOML, if it says (see `_conv`)."""
    show = getattr(conv, "show", None)
    return show if callable(show) else None


def _replace(obj: _DC, **changes: Any) -> _DC:
    import dataclasses

    return dataclasses.replace(obj, **changes)
