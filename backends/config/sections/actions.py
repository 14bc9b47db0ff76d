"""Parsing of [[actions]] and [[playbooks]]."""

from __future__ import annotations

from backends.config.base import _ENV_NAME_RE, BAD, Path_, _tname
from backends.config.converters import c_str
from backends.config.loader import _Loader, _Table
from backends.config.model import ActionConfig, _placeholders
from backends.config.schema import ACTION_PARAM_TYPES
from backends.engine.playbooks import Playbook, Step

_STEP_EXPECTED = 'a step table like { text = "Restart it", action = "service.restart", key = "r" }'


def _steps(ld: _Loader, t: _Table, key: str) -> list[tuple[Path_, Step]]:
    """A playbook's `diagnosis` / `resolution`: [[playbooks.KEY]] sub-tables or an array of inline tables."""
    raw = t.raw(key)
    path = t.path + (key,)
    if raw is None or raw is BAD:
        return []
    if not isinstance(raw, list):
        ld.error(path, f"expected an array of steps, got {_tname(raw)}", _STEP_EXPECTED)
        return []
    out = []
    for i, item in enumerate(raw):
        if item is BAD:
            continue
        if not isinstance(item, dict):
            ld.error(path + (i,), f"expected a step table, got {_tname(item)}", _STEP_EXPECTED)
            continue
        st = _Table(ld, item, path + (i,))
        step = Step(
            text=st.take("text"),
            action=st.take("action"),
            key=st.take("key"),
            check=st.take("check"),
            budget=st.take("budget"),
            targets=st.take("targets"),
            wait=st.take("wait"),
        )
        st.done()
        out.append((st.path, step))
    return out


def parse_actions(ld: _Loader, root: _Table) -> list[ActionConfig]:
    """[[actions]]"""
    actions = []
    for t in ld.array_of_tables(root.raw("actions"), ("actions",)):
        params: dict[str, str] = {}
        pt = ld.table(t.raw("params"), t.path + ("params",)) if t.has("params") else None
        if pt:
            for pname in list(pt.data):
                pv = pt.take(pname, c_str(choices=ACTION_PARAM_TYPES))
                if pv is BAD:
                    params[pname] = BAD  # reported; keep the name so argv is not reported too
                    continue
                if not _ENV_NAME_RE.match(pname):
                    ld.error(pt.path + (pname,), f"bad parameter name {pname!r}", "letters, digits and '_'")
                    continue
                params[pname] = pv
            pt.done()
        act = ActionConfig(
            name=t.take("name"),
            argv=t.take("argv"),
            key=t.take("key"),
            description=t.take("description"),
            danger=t.take("danger"),
            scope=t.take("scope"),
            params=params,
            timeout=t.take("timeout"),
        )
        if act.argv is not BAD:
            missing = sorted(set(_placeholders(act.argv)) - set(params) - {"operator", "config"})
            if missing:
                ld.error(t.path + ("argv",), f"placeholders not declared in params: {', '.join(missing)}",
                         "every {name} in argv declared in params = { name = \"type\" }")
        actions.append(act)
        t.done()
    return actions


def parse_playbooks(ld: _Loader, root: _Table) -> tuple[list[Playbook], list[tuple[Path_, Step]]]:
    """[[playbooks]]"""
    playbooks: list[Playbook] = []
    step_paths: list[tuple[Path_, Step]] = []
    for t in ld.array_of_tables(root.raw("playbooks"), ("playbooks",)):
        diagnosis = _steps(ld, t, "diagnosis")
        resolution = _steps(ld, t, "resolution")
        pb = Playbook(
            id=t.take("id"),
            title=t.take("title"),
            severity=t.take("severity"),
            budget=t.take("budget"),
            symptoms=t.take("symptoms"),
            diagnosis=tuple(s for _, s in diagnosis),
            resolution=tuple(s for _, s in resolution),
            escalate_to=t.take("escalate_to"),
            seed=t.take("seed"),
        )
        if not any(t.data.get(k) not in (None, []) for k in ("diagnosis", "resolution")):
            ld.error(t.path, "a playbook needs at least one diagnosis or resolution step",
                     "[[playbooks.diagnosis]] / [[playbooks.resolution]] entries, or "
                     'resolution = [{ text = "...", action = "service.restart", key = "r" }]')
        step_paths += diagnosis + resolution
        playbooks.append(pb)
        t.done()
    return playbooks, step_paths
