"""Parsing of [warroom] and [keys]."""

from __future__ import annotations

import re
from pathlib import Path

from backends.config.base import BAD, _replace
from backends.config.converters import c_list, c_str
from backends.config.loader import _Loader, _Table
from backends.config.model import WarroomConfig, _default_state_dir


def parse_warroom(ld: _Loader, root: _Table) -> WarroomConfig:
    """[warroom]"""
    warroom = WarroomConfig()
    t = ld.table(root.raw("warroom"), ("warroom",)) if root.has("warroom") else None
    if t:
        warroom = WarroomConfig(
            name=t.take("name"),
            environment=t.take("environment"),
            refresh=t.take("refresh"),
            timeout=t.take("timeout"),
            operator=t.take("operator"),
            audit_path=t.take("audit_path"),
            state_dir=t.take("state_dir"),
            read_only=t.take("read_only"),
            theme=t.take("theme"),
            log_buffer=t.take("log_buffer"),
        )
        t.done()
    if warroom.state_dir is None or warroom.audit_path is None:
        state_dir = warroom.state_dir or _default_state_dir()
        audit = warroom.audit_path or (state_dir / "audit.jsonl" if isinstance(state_dir, Path) else None)
        warroom = _replace(warroom, state_dir=state_dir, audit_path=audit)
    return warroom


def parse_keys(ld: _Loader, root: _Table) -> dict[str, str]:
    """[keys]"""
    keys: dict[str, str] = {}
    t = ld.table(root.raw("keys"), ("keys",)) if root.has("keys") else None
    if t:
        for bid in list(t.data):
            v = t.take(bid, c_list(c_str(pattern=re.compile(r"^\S+$"), expected="a key like \"R\" or \"ctrl+r\""),
                                   min_len=1, allow_single=True, expected='a key or keys: "R", "R,ctrl+r" or ["R", "ctrl+r"]'))
            if v is BAD:
                continue
            if not re.match(r"^[a-z][a-z0-9_.-]*$", bid):
                ld.error(("keys", bid), f"bad binding id {bid!r}", "a binding id like restart or orders_bulk_fix (the help screen, ?, lists them)")
                continue
            keys[bid] = ",".join(k.strip() for item in v for k in item.split(",") if k.strip())
        t.done()
    return keys
