"""One sanitiser for every text that came from outside (log lines, RPC errors, HTTP
bodies, command output, database values) before a person sees it.

A terminal, a chat message, an email, a postmortem or a web page must never receive
control characters from outside: `ESC [2J` clears the operator's screen, `ESC ]0;...`
retitles the window, `ESC ]52;...` writes the clipboard, `\\x9b` is the one-byte (C1)
CSI, NUL and bidi overrides hide or reorder what is shown. Every such character is
shown escaped instead (`\\x1b`, `\\x9b`, `\\u202e`), so the text stays readable and
inert; what it tried to do is visible.

- `sanitize(raw)`: one log line for the Logs pane (ANSI colour sequences removed, the
  rest escaped, cut at `MAX_LINE_CHARS`). `backends.sources.logs` uses it.
- `inert(text)`: one line of outside text (an error, a value): every control escaped,
  newlines included, cut.
- `inert_block(text)`: several lines (a brief, a message body): newlines kept, every
  other control escaped.
- `markdown_inline(text)`, `fence(text)`: the same for a markdown document (a
  postmortem): HTML tags, links and table pipes made literal.
- `html_text(text)`: for a web page: inert, then HTML-escaped.

Rich markup is the printing side's business: the CLIs print outside text as
`rich.text.Text` or with `markup=False` (see `tui/cmd_*`). Pure functions, no imports
beyond the standard library.
"""

from __future__ import annotations

import html
import re
from typing import Any

MAX_LINE_CHARS = 4096  # characters of a log line kept for display

# ANSI escape sequences (CSI, OSC, two-character ESC sequences): the Logs pane drops them
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# C0/C1 controls (tab and newline handled apart), DEL, and the bidi / zero-width / line
# separator characters that could disguise or reorder a line
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064"
                      "\u2066-\u2069\ufeff\ufff9-\ufffb]")
_CONTROL_KEEP_NL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064"
                              "\u2066-\u2069\ufeff\ufff9-\ufffb]")


def _escape_char(m: re.Match[str]) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def _text(value: Any, limit: int | None) -> tuple[str, int]:
    """(decoded text of at most ~limit characters, the original length)."""
    if isinstance(value, bytes | bytearray):
        total = len(value)
        head = bytes(value[: limit * 4 + 16]) if limit is not None else bytes(value)
        return head.decode("utf-8", errors="backslashreplace"), total
    text = value if isinstance(value, str) else str(value)
    return text, len(text)


def _cut(text: str, limit: int | None, total: int, unit: str) -> str:
    if limit is not None and (len(text) > limit or total > len(text)):
        return f"{text[:limit]} … [cut: {total:,} {unit}]"
    return text


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """Every control / format character of `text` shown escaped; tabs become 4 spaces."""
    if "\t" in text:
        text = text.replace("\t", "    ")
    if keep_newlines and "\r" in text:
        text = text.replace("\r\n", "\n")
    if text.isprintable():  # fast path: nothing to escape
        return text
    return (_CONTROL_KEEP_NL if keep_newlines else _CONTROL).sub(_escape_char, text)


def sanitize(raw: bytes | str, max_chars: int = MAX_LINE_CHARS) -> str:
    """Bytes of one log line -> text safe to display: decoded, ANSI colour sequences
    removed, every other control escaped, cut (the Logs pane's line)."""
    total = len(raw) + getattr(raw, "dropped", 0)
    head = raw[: max_chars * 4 + 16]  # never decode more than we can show: 1 MB costs what 16 KB costs
    text = head.decode("utf-8", errors="backslashreplace") if isinstance(head, bytes) else head
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    text = escape_controls(text)
    if len(text) > max_chars or total > len(head):
        unit = "bytes" if isinstance(raw, bytes) else "chars"
        text = f"{text[:max_chars]} … [cut: line of {total:,} {unit}]"
    return text


def inert(value: Any, max_chars: int | None = 2000) -> str:
    """One line of outside text, safe for a terminal, a message or a log: every control
    character (newlines too, ESC of an escape sequence too) shown escaped, then cut."""
    if value is None:
        return ""
    text, total = _text(value, max_chars)
    return _cut(escape_controls(text), max_chars, total, "bytes" if isinstance(value, bytes) else "chars")


def inert_block(value: Any, max_chars: int | None = 20_000) -> str:
    """Several lines of outside text (a brief, a message body): line breaks kept,
    every other control shown escaped, then cut."""
    if value is None:
        return ""
    text, total = _text(value, max_chars)
    return _cut(escape_controls(text, keep_newlines=True), max_chars, total,
                "bytes" if isinstance(value, bytes) else "chars")


# what markdown could turn into markup that does something: HTML tags and autolinks (<),
# links and images ([ ]), code spans (`), table cells (|), entities (&), the escape itself
_MD_SPECIAL = re.compile(r"([\\`\[\]<|&])")


def markdown_inline(value: Any, max_chars: int | None = 2000) -> str:
    """Outside text inside a markdown line or table cell: inert, and every character
    markdown could read as active markup (HTML tags, links, code, pipes) backslash-escaped,
    so a renderer shows it literally and a plain reader still reads it."""
    return _MD_SPECIAL.sub(r"\\\1", inert(value, max_chars))


def fence(value: Any) -> tuple[str, str]:
    """(fence, body) for a fenced code block holding outside text: the fence is longer
    than any run of backticks in the text, so the text cannot close it."""
    body = inert_block(value)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1), body


def html_text(value: Any, max_chars: int | None = 20_000) -> str:
    """Outside text for a web page: inert (line breaks kept), then HTML-escaped."""
    return html.escape(inert_block(value, max_chars), quote=True)


__all__ = ["MAX_LINE_CHARS", "escape_controls", "fence", "html_text", "inert", "inert_block", "markdown_inline",
           "sanitize"]
