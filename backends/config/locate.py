"""Line locator: dotted key paths -> line numbers (tomllib keeps none)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from backends.config.base import Path_

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_KEY = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_KEYVAL_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_KEY_TOKEN = re.compile(rf"{_BARE}|{_BASIC}|{_LITERAL}")


def _split_dotted(text: str) -> list[str]:
    out = []
    for tok in _KEY_TOKEN.findall(text):
        if tok.startswith('"'):
            try:
                tok = tomllib.loads(f"k = {tok}")["k"]
            except tomllib.TOMLDecodeError:
                tok = tok[1:-1]
        elif tok.startswith("'"):
            tok = tok[1:-1]
        out.append(tok)
    return out


def render_path(path: Path_) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            text = seg if re.fullmatch(_BARE, seg) else f'"{seg}"'
            out += ("." if out else "") + text
    return out


class LineLocator:
    """Maps key paths (('services', 1, 'match')) to 1-based line numbers by scanning the text.

    Good enough for tables, arrays of tables, dotted keys and multi-line arrays/strings;
    an element of an array maps to the line it starts on (`steps = [\n  { text = ... },\n]`),
    keys inside an inline table to the line they are on.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Path_, int] = {}
        self._scan(text)

    def line_of(self, path: Path_) -> int | None:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def _note(self, path: Path_, line: int) -> None:
        self.lines.setdefault(path, line)

    def _scan(self, text: str) -> None:
        aot: dict[Path_, int] = {}
        current: Path_ = ()
        value: _ValueScan | None = None  # a value still open (multi-line array / string)
        for no, line in enumerate(text.splitlines(), start=1):
            if value is not None and value.open:
                value.feed(line, no)
                continue
            m = _HEADER_RE.match(line)
            if m and not _KEYVAL_RE.match(line):
                segs = _split_dotted(m.group(2))
                is_aot = m.group(1) == "[["
                resolved: list[str | int] = []
                for i, seg in enumerate(segs):
                    resolved.append(seg)
                    last = i == len(segs) - 1
                    key = tuple(resolved)
                    if not last and key in aot:
                        resolved.append(aot[key] - 1)
                    elif last and is_aot:
                        count = aot.get(key, 0)
                        aot[key] = count + 1
                        self._note(key, no)
                        resolved.append(count)
                    if not last:
                        self._note(tuple(resolved), no)
                current = tuple(resolved)
                self._note(current, no)
                continue
            m = _KEYVAL_RE.match(line)
            if m:
                segs = _split_dotted(m.group(1))
                for i in range(1, len(segs) + 1):
                    self._note(current + tuple(segs[:i]), no)
                value = _ValueScan(self, current + tuple(segs))
                value.feed(line[m.end():], no)


_INLINE_KEY_RE = re.compile(rf"\s*({_DOTTED})\s*=")


@dataclass(slots=True)
class _ArrayFrame:
    """An open `[`: its path, the index of the element being read, whether that element started."""

    path: Path_
    index: int = 0
    started: bool = False


@dataclass(slots=True)
class _TableFrame:
    """An open `{`: its path and the path of the key being read (None: before its `key =`)."""

    path: Path_
    key: Path_ | None = None


class _ValueScan:
    """Follows one value across lines: bracket nesting, open multi-line strings, and the
    line each array element starts on and each inline-table key is on."""

    def __init__(self, loc: LineLocator, path: Path_) -> None:
        self.loc = loc
        self.path = path
        self.stack: list[_ArrayFrame | _TableFrame] = []
        self.ml: str | None = None  # open multi-line string delimiter

    @property
    def open(self) -> bool:
        return bool(self.stack) or self.ml is not None

    def _value_path(self) -> Path_ | None:
        if not self.stack:
            return self.path
        top = self.stack[-1]
        return top.path + (top.index,) if isinstance(top, _ArrayFrame) else top.key

    def feed(self, text: str, no: int) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.ml is not None:
                j = text.find(self.ml, i)
                if j < 0:
                    return
                i, self.ml = j + 3, None
                continue
            c = text[i]
            if c in " \t\r":
                i += 1
                continue
            if c == "#":
                return
            top = self.stack[-1] if self.stack else None
            if isinstance(top, _TableFrame) and top.key is None:
                m = _INLINE_KEY_RE.match(text, i)
                if m:
                    key_path = top.path + tuple(_split_dotted(m.group(1)))
                    top.key = key_path
                    for k in range(len(top.path) + 1, len(key_path) + 1):
                        self.loc._note(key_path[:k], no)
                    i = m.end()
                    continue
            if isinstance(top, _ArrayFrame) and not top.started and c not in ",]":
                top.started = True
                self.loc._note(top.path + (top.index,), no)
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.ml = text[i:i + 3]
                i += 3
            elif c == '"':
                i += 1
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
                i += 1
            elif c == "'":
                j = text.find("'", i + 1)
                i = n if j < 0 else j + 1
            elif c in "[{":
                vp = self._value_path()
                if vp is None:  # malformed (tomllib already accepted it): follow nesting only
                    vp = self.path + ("?",)
                self.stack.append(_ArrayFrame(vp) if c == "[" else _TableFrame(vp))
                i += 1
            elif c in "]}":
                if self.stack:
                    self.stack.pop()
                i += 1
            elif c == ",":
                if isinstance(top, _ArrayFrame):
                    top.index += 1
                    top.started = False
                elif top is not None:
                    top.key = None
                i += 1
            else:
                i += 1
