"""examples/reference.toml and backends/config/schema.py agree: every key of the schema is shown
(as a value, or a `# key = value` comment), with its default or one of its documented examples;
every key shown is in the schema. Pure and fast."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from backends.config import schema
from backends.config.base import BAD
from backends.config.loader import _Loader
from backends.config.schema import SCHEMA, Key, schema_path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "examples" / "reference.toml"
_HEADER = re.compile(r"^(?:# )?\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
_COMMENTED = re.compile(r"^# ([A-Za-z_][A-Za-z0-9_]*) = ")


def _section(header: str) -> str:
    return schema_path(tuple(header.split(".")))


def _shown() -> list[tuple[str, str, Any, int]]:
    """(section, key, TOML value, line) of every key the reference shows, active or commented."""
    text = REFERENCE.read_text()
    out: list[tuple[str, str, Any, int]] = []
    lines = {}  # (section, key) -> first line, for messages

    def walk(path: tuple[str, ...], table: dict[str, Any]) -> None:
        sec = schema_path(path)
        for key, value in table.items():
            spec = SCHEMA[sec][key] if sec in SCHEMA and key in SCHEMA[sec] else None
            if spec is not None and spec.sub and isinstance(value, dict):
                walk(path + (key,), value)
            elif spec is not None and spec.sub and isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        walk(path + (key,), item)
            elif sec in ("postgres", "redis", "chain", "alertmanager") and len(path) == 1:
                walk(path + (key,), value)  # the NAME level
            else:
                out.append((sec, key, value, lines.get((sec, key), 0)))

    walk((), tomllib.loads(text))
    section = ""
    for no, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            section = _section(m.group(1))
            continue
        if not _COMMENTED.match(line):
            continue  # prose, or an indented example inside prose
        for part in line[2:].split("; "):
            try:
                ((key, value),) = tomllib.loads(part).items()
            except (tomllib.TOMLDecodeError, ValueError):
                continue  # prose that happens to start like a key
            out.append((section, key, value, no))
    return out


def _agrees(spec: Key, value: Any) -> bool:
    if value in spec.examples:
        return True
    if spec.required or spec.conv is None:
        return False
    ld = _Loader("", str(REFERENCE), REFERENCE.parent, {})
    value = ld.interpolate(value, ())
    if value is BAD:
        return False
    try:
        converted = spec.converter(ld)(value)
    except Exception:
        return False
    # an optional key without a default (None: not set) shows an example value, which must be valid
    return bool(converted == spec.default or (spec.default is None and converted is not BAD))


def test_every_key_shown_is_in_the_schema() -> None:
    unknown = [f"line {no}: [{sec}] {key}" for sec, key, _, no in _shown()
               if sec not in SCHEMA or (key not in SCHEMA[sec] and not SCHEMA[sec].free)]
    assert unknown == [], "keys in reference.toml that backends/config/schema.py does not declare"


def test_every_key_of_the_schema_is_shown() -> None:
    shown = {(sec, key) for sec, key, _, _ in _shown()}
    missing = [f"[{s.path}] {k.name}" for s in schema.SECTIONS if s.path and not s.free
               for k in s.keys if not k.sub and (s.path, k.name) not in shown]
    assert missing == [], "keys of the schema that examples/reference.toml does not show"


def test_values_shown_are_defaults_or_documented_examples() -> None:
    wrong = []
    for sec, key, value, no in _shown():
        if sec not in SCHEMA or key not in SCHEMA[sec] or SCHEMA[sec][key].sub:
            continue
        spec = SCHEMA[sec][key]
        if not _agrees(spec, value):
            wrong.append(f"line {no}: [{sec}] {key} = {value!r} (default {spec.default!r}, "
                         f"examples {spec.examples!r})")
    assert wrong == [], "values in reference.toml that are neither the schema's default nor an example"


def test_limits_comment_is_in_the_reference() -> None:
    from backends.config import limits_comment

    assert limits_comment() in REFERENCE.read_text()


def test_the_schema_lists_every_section_and_key() -> None:
    text = "\n".join(schema.describe())
    for sec in schema.SECTIONS:
        if sec.path:
            assert sec.header in text
    assert "  pool_max = 2  #" in text and "  dsn = (required) [secret]" in text


@pytest.mark.parametrize("path", sorted(p for p in SCHEMA if p))
def test_section_paths_resolve(path: str) -> None:
    parts = path.split(".")
    if parts[0] in ("postgres", "redis", "chain", "alertmanager"):
        parts.insert(1, "NAME")
    assert schema.section_of(tuple(parts)) is SCHEMA[path]
