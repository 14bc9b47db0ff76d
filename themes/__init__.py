"""warroom themes: `textual.theme.Theme` objects with semantic status variables.

Widgets never use raw colours: they use `$status-ok`, `$status-warn`, `$status-crit`
and `$status-unknown` (plus the `-bg` variants for badges). Every state is also told
by a symbol and a word (`Status.symbol` / `Status.word`), so no theme depends on
red/green alone; the colour-blind theme uses the Okabe-Ito blue/orange/vermillion set.

Layout CSS lives next to this file (`app.tcss`); `LAYOUT_CSS` is its path.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
LAYOUT_CSS = HERE / "app.tcss"

DEFAULT_THEME = "dark"
THEME_NAMES = ("dark", "light", "high-contrast", "colorblind")
ALIASES = {"default": "dark", "hc": "high-contrast", "colourblind": "colorblind", "cb": "colorblind",
           "color-blind": "colorblind", "colour-blind": "colorblind"}

# Semantic variables every theme defines (used by widgets and layout CSS).
STATUS_VARIABLES = ("status-ok", "status-warn", "status-crit", "status-unknown")

_SPECS: dict[str, dict] = {
    "dark": dict(
        primary="#4f9bd9", secondary="#2a5d8a", accent="#e0a030", warning="#e0a030",
        error="#e0505a", success="#50b870", foreground="#dcdfe4", background="#15181d",
        surface="#1c2027", panel="#262b33", dark=True,
        variables={"status-ok": "#50b870", "status-warn": "#e0a030", "status-crit": "#ff5f5f",
                   "status-unknown": "#8a93a0", "status-stale": "#6b7280",
                   "badge-readonly": "#2a5d8a", "badge-production": "#b0303a"},
    ),
    "light": dict(
        primary="#1f5f9e", secondary="#3d6f9c", accent="#a05a00", warning="#9a5b00",
        error="#b3202a", success="#1e7a3c", foreground="#1b1f24", background="#f7f7f5",
        surface="#ececea", panel="#dedfdb", dark=False,
        variables={"status-ok": "#1e7a3c", "status-warn": "#9a5b00", "status-crit": "#b3202a",
                   "status-unknown": "#5a616b", "status-stale": "#8a8f96",
                   "badge-readonly": "#1f5f9e", "badge-production": "#b3202a"},
    ),
    "high-contrast": dict(
        primary="#ffff00", secondary="#00ffff", accent="#ffff00", warning="#ffff00",
        error="#ff3030", success="#00ff00", foreground="#ffffff", background="#000000",
        surface="#000000", panel="#202020", dark=True, luminosity_spread=0.25, text_alpha=1.0,
        variables={"status-ok": "#00ff00", "status-warn": "#ffff00", "status-crit": "#ff3030",
                   "status-unknown": "#ffffff", "status-stale": "#a0a0a0",
                   "badge-readonly": "#0000c0", "badge-production": "#c00000",
                   "border": "#ffffff", "border-blurred": "#a0a0a0"},
    ),
    # Okabe-Ito palette: bluish green / orange / vermillion / grey, distinguishable with
    # protanopia and deuteranopia; the symbol and the word still carry the state.
    "colorblind": dict(
        primary="#56b4e9", secondary="#0072b2", accent="#e69f00", warning="#e69f00",
        error="#d55e00", success="#009e73", foreground="#e6e6e6", background="#16191e",
        surface="#1d2127", panel="#282d35", dark=True,
        variables={"status-ok": "#56b4e9", "status-warn": "#e69f00", "status-crit": "#d55e00",
                   "status-unknown": "#bbbbbb", "status-stale": "#777777",
                   "badge-readonly": "#0072b2", "badge-production": "#d55e00"},
    ),
}


def variable_defaults() -> dict[str, str]:
    """Fallbacks for app-specific variables (used when a built-in Textual theme is active)."""
    return dict(_SPECS["dark"]["variables"])


def resolve_name(name: str | None) -> str:
    """Canonical theme name for `name` (aliases allowed); raise ValueError when unknown."""
    if not name:
        return DEFAULT_THEME
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown theme {name!r} (expected one of: {', '.join(THEME_NAMES)})")
    return key


def all_themes() -> list:
    """The warroom `Theme` objects. Imports textual, so call it only when building the app."""
    from textual.theme import Theme

    return [Theme(name=name, **spec) for name, spec in _SPECS.items()]
