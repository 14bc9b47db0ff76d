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
        "backends." + p.stem for p in (ROOT / "backends").glob("*.py") if p.stem != "__init__"
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
        "\n".join(f"import {m}" for m in mods) + "\nimport backends.rules as r; r.load_rule_modules()"
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
