"""The loader: interpolation, error collection, and tables whose keys are taken by converters."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.config.base import (
    _NAME_RE,
    _REQUIRED,
    _SECRET_NAME,
    BAD,
    Converter,
    Path_,
    _Invalid,
    _SkipBad,
    _tname,
    expected_of,
)
from backends.config.locate import LineLocator, render_path
from backends.config.schema import Section, section_of
from backends.errors import ConfigError, register_secret

_VAR_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\{([^}]*)\}?")


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$${":
            return "${"
        if m.group(3) is not None or m.group(1) is None:
            raise _Invalid(
                f"bad variable reference {whole!r}",
                "${NAME} or ${NAME:-default} with NAME matching [A-Za-z_][A-Za-z0-9_]*",
            )
        name, default = m.group(1), m.group(2)
        if name in env and (env[name] != "" or default is None):
            if _SECRET_NAME.search(name) or name.endswith(("_KEY", "_PASS", "_PW")):
                register_secret(env[name])  # e.g. ${DB_PASSWORD} used in a key that is not a Secret
            return env[name]
        if default is not None:
            return default
        raise _Invalid(
            f"environment variable {name} is not set",
            f"{name} to be set in the environment, or a default: ${{{name}:-value}}",
        )

    return _VAR_RE.sub(repl, value)


class _Loader:
    def __init__(self, text: str, filename: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.text = text
        self.filename = filename
        self.base_dir = base_dir
        self.env = env
        self.errors: list[ConfigError] = []
        self.locator = LineLocator(text)

    # -- errors ------------------------------------------------------------
    def error(self, path: Path_, message: str, expected: str | None = None) -> None:
        self.errors.append(
            ConfigError(message, file=self.filename, line=self.locator.line_of(path),
                        key=render_path(path) or None, expected=expected)
        )

    # -- interpolation over the whole tree -----------------------------------
    def interpolate(self, value: Any, path: Path_) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            try:
                return _interpolate(value, self.env)
            except _Invalid as e:
                self.error(path, e.message, e.expected)
                return BAD
        if isinstance(value, dict):
            return {k: self.interpolate(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, path + (i,)) for i, v in enumerate(value)]
        return value

    def table(self, data: Any, path: Path_) -> _Table | None:
        if data is BAD:
            return None
        if not isinstance(data, dict):
            self.error(path, f"expected a table, got {_tname(data)}", f"a [{render_path(path)}] table")
            return None
        return _Table(self, data, path)

    def array_of_tables(self, data: Any, path: Path_) -> list[_Table]:
        if data is None:
            return []
        if not isinstance(data, list):
            self.error(path, f"expected an array of tables, got {_tname(data)}",
                       f"[[{render_path(path)}]] entries")
            return []
        out = []
        for i, item in enumerate(data):
            t = self.table(item, path + (i,))
            if t is not None:
                out.append(t)
        return out

    def named_tables(self, data: Any, path: Path_) -> list[tuple[str, _Table]]:
        if data is None:
            return []
        head = render_path(path)
        if not isinstance(data, dict):
            self.error(path, f"expected named tables, got {_tname(data)}", f"[{head}.NAME] tables")
            return []
        out = []
        for name, item in data.items():
            if not _NAME_RE.match(name):
                self.error(path + (name,), f"bad name {name!r}", "letters, digits, '_', '-' or '.'")
                continue
            if not isinstance(item, dict):
                self.error(path + (name,), f"expected a table [{head}.{name}], got {_tname(item)}",
                           f"named tables like [{head}.main]")
                continue
            out.append((name, _Table(self, item, path + (name,))))
        return out

    def resolve_glob(self, text: str) -> str:
        """A file path or glob, relative to the config file's directory."""
        p = os.path.expanduser(text)
        return p if os.path.isabs(p) else str(self.base_dir / p)

    def resolve_path(self, text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


_UNSET: Any = object()  # take(): no converter / default given, the schema's


class _Table:
    """One TOML table being parsed. Its keys are those of its schema section (schema.py):
    `take(key)` converts one with the schema's converter and default, `done()` reports every
    key the schema does not know (or, for a free-form table, that the parser did not ask for)."""

    def __init__(self, ld: _Loader, data: dict[str, Any], path: Path_) -> None:
        self.ld = ld
        self.data = data
        self.path = path
        self.used: set[str] = set()
        self.schema: Section | None = section_of(path)
        self.excluded: set[str] = set()

    def has(self, key: str) -> bool:
        self.used.add(key)  # a key the parser asks about is a known key
        return key in self.data

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def exclude(self, *keys: str) -> None:
        """Keys of the schema this table does not take (e.g. signers on a jsonrpc chain): unknown here."""
        self.excluded.update(keys)

    def take(self, key: str, conv: Converter | None = None, default: Any = _UNSET) -> Any:
        """The key's value converted (`conv`, else the schema's converter), its default when
        absent (`default`, else the schema's; required: an error), BAD when invalid."""
        self.used.add(key)
        spec = self.schema[key] if self.schema is not None and key in self.schema else None
        if spec is None and self.schema is not None and not self.schema.free:
            raise KeyError(f"[{self.schema.path}] has no key {key!r} in backends/config/schema.py")
        if conv is None:
            if spec is None:
                raise KeyError(f"no converter for {key!r}: not in the schema")
            conv = spec.converter(self.ld)
        if default is _UNSET:
            default = spec.default if spec is not None else _REQUIRED
        if key not in self.data:
            if default is _REQUIRED:
                self.ld.error(self.path, f"missing required key {key!r}", expected_of(conv))
                return BAD
            return default
        value = self.data[key]
        if value is BAD:
            return BAD
        try:
            return conv(value)
        except _SkipBad:
            return BAD
        except _Invalid as e:
            self.ld.error(self.path + (key,) + e.sub, e.message, e.expected)
            return BAD

    def known(self) -> list[str]:
        """The keys this table may have, sorted."""
        if self.schema is None or self.schema.free:
            return sorted(self.used)
        return sorted(set(self.schema.names) - self.excluded)

    def done(self) -> None:
        known = self.known()
        for key in self.data:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                self.ld.error(self.path + (key,), msg, "one of: " + ", ".join(known) if known else "no keys here")
