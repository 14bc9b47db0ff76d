"""Layering and start-up cost: the engine never imports the UI, and nothing heavy loads early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("web3", "eth_account", "eth_tester", "docker", "asyncpg", "redis", "apprise", "psutil",
         "prometheus_client", "aiohttp")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _backend_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "backends").rglob("*.py")
    )


def test_backends_never_import_textual_widgets_or_tui():
    mods = _backend_modules()
    assert "backends.model" in mods
    loaded = _modules_after("\n".join(f"import {m}" for m in mods))
    ui = sorted(m for m in loaded if m.split(".")[0] in ("textual", "widgets", "tui", "rich"))
    assert [m for m in ui if not m.startswith("rich")] == []


def test_importing_the_engine_loads_no_heavy_library():
    mods = _backend_modules()
    loaded = _modules_after(
        "\n".join(f"import {m}" for m in mods) + "\nimport backends.engine.rules as r; r.load_rule_modules()"
    )
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"imported at module level: {heavy}"


def test_cli_help_path_loads_neither_textual_nor_heavy_libraries():
    loaded = _modules_after("import tui.cli")
    bad = sorted(m for m in loaded if m.split(".")[0] in HEAVY + ("textual",))
    assert bad == []


def test_ruff_is_clean():
    """The tree passes the project's ruff config (pyproject.toml): lint stays clean on main."""
    import shutil

    import pytest

    ruff = Path(sys.executable).parent / "ruff"
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    out = subprocess.run([exe, "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


# Errors per file `mypy` (pyproject's [tool.mypy]: backends/ strict, tui/ and widgets/ normal) found
# when the type checker came in (issue 16). A ratchet: a file may only go down, every other file must
# stay at 0. Lower a figure (or delete its line) when you fix a file; the goal is an empty dict.
MYPY_PENDING: dict[str, int] = {}  # every file is at 0; a file listed here may keep that many


def test_mypy_errors_only_go_down():
    """`mypy` as `make lint` runs it: no file has more errors than MYPY_PENDING allows (0 if absent)."""
    import collections
    import re

    import pytest

    mypy = Path(sys.executable).parent / "mypy"
    if not mypy.exists():
        pytest.skip("mypy is not installed (pip install -e .[dev])")
    out = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "error:" in out.stdout or out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
    counts = collections.Counter(
        m.group(1) for m in re.finditer(r"^([\w/]+\.py):\d+: error:", out.stdout, re.M)
    )
    over = {f: (n, MYPY_PENDING.get(f, 0)) for f, n in counts.items() if n > MYPY_PENDING.get(f, 0)}
    lines = [ln for ln in out.stdout.splitlines() if ln.split(":", 1)[0] in over]
    assert over == {}, "\n".join(lines[:60])


# --------------------------------------------------------------------------- layers, statically


def _imports(path: Path, *, top_only: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of each import in `path`: every one, lazy imports inside
    functions included, or with `top_only` only those run when the module loads."""
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out: list[tuple[int, str]] = []

    def add(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - (node.level - 1)])
                if node.module is None:
                    out.extend((node.lineno, ".".join([*base, a.name])) for a in node.names)
                    return
                out.append((node.lineno, ".".join([*base, node.module])))
            else:
                out.append((node.lineno, node.module or ""))

    def typing_only(node: ast.AST) -> bool:  # `if TYPE_CHECKING:` imports never run
        test = getattr(node, "test", None)
        return isinstance(node, ast.If) and (
            (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))

    if top_only:  # the module body, and what its if/try blocks import at load
        for node in tree.body:
            if typing_only(node):
                continue
            for inner in ast.walk(node) if isinstance(node, ast.If | ast.Try) else (node,):
                add(inner)
    else:
        for node in ast.walk(tree):
            add(node)
    return out


def _py(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_layers_are_one_way_even_in_lazy_imports():
    """model imports nothing of ours (nor anything outside the standard library); backends
    never imports Textual, the UI or the widgets, not even inside a function; widgets reach
    into tui only through the compat module. Checked on the source, so an import made only
    when some code path runs is caught too (the LogLine.fields import of backends.sources.logs from
    model was one)."""
    bad: list[str] = []
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for line, mod in _imports(ROOT / "backends" / "model.py", top_only=False):
        if mod.split(".")[0] not in stdlib:
            bad.append(f"backends/model.py:{line}: imports {mod}")
    for path in _py("backends"):
        for line, mod in _imports(path, top_only=False):
            if mod.split(".")[0] in ("textual", "tui", "widgets"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {mod}")
    for path in _py("widgets"):
        for line, mod in _imports(path, top_only=False):
            if mod.split(".")[0] == "tui" and mod != "tui.textual_compat":
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {mod}")
    assert bad == []


def test_backends_have_no_import_cycle_at_load():
    """The modules of backends/ import each other one way when they load (a cycle makes the
    import order matter and hides half-initialised modules)."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in _py("backends")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for _line, mod in _imports(path, top_only=True):
            while mod and mod not in mods and "." in mod:
                mod = mod.rsplit(".", 1)[0]  # `from .x import name` -> backends.x
            if mod in mods and mod != name:
                deps.add(mod)
        graph[name] = deps
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_readme_command_line_is_what_the_parsers_say():
    """`warroom --help` and the README cannot disagree: the README's "Command line" block is
    the synopsis built from the parsers (each subcommand's own options and one-line help)."""
    from tui.cli import synopsis

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Command line\n\n```\n", 1)[1].split("\n```", 1)[0]
    assert block == synopsis(), "regenerate: python -c 'import tui.cli as c; print(c.synopsis())'"
