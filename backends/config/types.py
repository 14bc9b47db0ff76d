"""Value types of the configuration: secrets, SQL identifiers, amounts, sizes, themes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from backends.errors import MASK, register_secret


class Secret:
    """A secret string. str(), repr() and format() are masked; `.reveal()` gives the text.

    The value is registered with `register_secret` so `redact()` scrubs it from any text.
    With `url_parts=True` (DSNs, Redis and RPC URLs) only the parts of the URL that are
    secret are registered (password, token-like path segments, query values), so that
    `redact(url)` still shows `redis://127.0.0.1:6379/0` or `postgresql://app:********@host/db`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str, *, url_parts: bool = False) -> None:
        self._value = str(value)
        if _URL_RE.match(self._value):
            _register_url_parts(self._value)
        if not url_parts:
            register_secret(self._value)

    def reveal(self) -> str:
        return self._value

    def display(self) -> str:
        """A safe label: a URL's scheme://host[:port] (no user, password, path or query), else the mask."""
        m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^@/\s]*@)?([^/?#\s]*)", self._value)
        if m and m.group(2):
            return f"{m.group(1)}{m.group(2)}"
        return MASK

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:  # pickling keeps the value (process pools); never printed
        return (Secret, (self._value,))


_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_IDENT_PART = r"[A-Za-z_][A-Za-z0-9_]*"
IDENT_RE = re.compile(rf"^{_IDENT_PART}(?:\.{_IDENT_PART})?$")


class Ident(str):
    """A validated SQL identifier (`name` or `schema.name`). `.quoted` is safe to splice into SQL."""

    __slots__ = ()

    @property
    def quoted(self) -> str:
        return quote_ident(self)


def validate_ident(name: str) -> Ident:
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise ValueError(
            f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$, optionally schema.table)"
        )
    return Ident(name)


def quote_ident(name: str, *, allow_schema: bool = True) -> str:
    """`schema.table` -> `"schema"."table"`; raises ValueError for anything not an identifier."""
    validate_ident(name)
    if not allow_schema and "." in name:
        raise ValueError(f"invalid SQL identifier {name!r} (expected ^[A-Za-z_][A-Za-z0-9_]*$, no schema)")
    return ".".join(f'"{part}"' for part in name.split("."))


@dataclass(frozen=True, slots=True)
class Amount:
    """A token amount in the smallest unit, with its symbol and decimals ('5 ether' -> 5e18 wei)."""

    value: int
    symbol: str = ""
    decimals: int = 0

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __str__(self) -> str:
        if not self.symbol:
            return str(self.value)
        whole = Decimal(self.value) / (Decimal(10) ** self.decimals)
        text = format(whole.normalize(), "f") if self.decimals else str(self.value)
        return f"{text} {self.symbol}"


@dataclass(frozen=True, slots=True)
class TokenAmount:
    """A minimum in whole tokens of an ERC-20 ('1000 USDC') whose decimals are read from the
    token (`decimals()`) when the balance does not configure them: scaled once they are known."""

    units: Decimal
    symbol: str

    def scaled(self, decimals: int) -> int:
        """In the token's smallest unit (rounded up: a fraction below the unit still counts)."""
        value = self.units * (Decimal(10) ** decimals)
        return int(value.to_integral_value(rounding="ROUND_CEILING"))

    def __str__(self) -> str:
        return f"{format(self.units.normalize(), 'f')} {self.symbol}"


# unit -> (symbol, decimals of the symbol, decimals this unit represents)
_AMOUNT_UNITS: dict[str, tuple[str, int, int]] = {
    "ether": ("ETH", 18, 18),
    "eth": ("ETH", 18, 18),
    "gwei": ("ETH", 18, 9),
    "wei": ("ETH", 18, 0),
    "gas": ("GAS", 8, 8),
    "neo": ("NEO", 0, 0),
}
_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)?\s*$")


def parse_amount(value: Any) -> Amount:
    """'5 ether', '0.5 gwei', '1000 wei', '12.5 GAS', '3 NEO' or an integer (smallest unit)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid amount {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid amount {value!r}: negative")
        return Amount(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid amount {value!r}")
    m = _AMOUNT_RE.match(value)
    if not m:
        raise ValueError(f"invalid amount {value!r}")
    number, unit = m.group(1), m.group(2)
    if unit is None:
        if "." in number:
            raise ValueError(f"invalid amount {value!r}: a plain number is the smallest unit and must be whole")
        return Amount(int(number))
    spec = _AMOUNT_UNITS.get(unit.lower())
    if spec is None:
        raise ValueError(f"invalid amount {value!r}: unknown unit {unit!r}")
    symbol, decimals, unit_decimals = spec
    try:
        scaled = Decimal(number) * (Decimal(10) ** unit_decimals)
    except InvalidOperation:
        raise ValueError(f"invalid amount {value!r}") from None
    if scaled != scaled.to_integral_value():
        raise ValueError(f"invalid amount {value!r}: more decimals than {unit} allows")
    return Amount(int(scaled), symbol, decimals)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4,
               "tb": 1024**4, "tib": 1024**4}


def parse_size(value: Any) -> int:
    """'500MB', '2 GB', '512kb' or an integer number of bytes -> bytes (1 MB = 1024*1024, as Redis)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}")
    return int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


# The console's themes and their aliases, as registered by the `themes` package (a backend
# must not import it: it is the console's; tests/test_config.py checks that they match).
THEMES = ("dark", "light", "high-contrast", "colorblind")
THEME_ALIASES = {"default": "dark", "hc": "high-contrast", "colourblind": "colorblind", "cb": "colorblind",
                 "color-blind": "colorblind", "colour-blind": "colorblind"}


def _register_url_password(url: str) -> None:
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:([^@/\s]+)@", url)
    if m:
        register_secret(m.group(1))


def _register_url_parts(url: str) -> None:
    """Register the parts of a secret URL that libraries echo in errors: the password, token-like
    path segments (`/v2/<api key>`) and query values."""
    _register_url_password(url)
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]*([^?#\s]*)(?:\?([^#\s]*))?", url)
    if not m:
        return
    for seg in m.group(1).split("/"):
        if len(seg) >= 16:
            register_secret(seg)
    for pair in (m.group(2) or "").split("&"):
        value = pair.partition("=")[2]
        if len(value) >= 8:
            register_secret(value)


# -- sections --------------------------------------------------------------------
