"""The `warroom` command: the console, plus subcommands loaded lazily from a table.

`warroom --help` imports nothing heavy (no textual, no adapters): each subcommand's
one-line help lives in the table below and its module is imported only when that
subcommand runs. A subcommand module exposes `add_arguments(parser)` and
`run(args) -> int`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("tui.cmd_check", "validate the config without connecting; print what is configured"),
    "demo": ("sandbox.cli", "start the sandbox stack and open the console on it"),
    "drill": ("sandbox.drills_cli", "list fault drills, or inject one into the running sandbox"),
    "health": ("tui.cmd_health", "one-shot health report; exit 0 ok, 1 warn, 2 crit, 3 unknown"),
    "orders": ("tui.cmd_orders", "stuck orders headless: stuck | verify | fix | bulk-fix | report"),
    "audit": ("tui.cmd_audit", "show, search and verify the audit trail"),
    "incident": ("tui.cmd_incident", "open, update, escalate and resolve incidents"),
    "serve": ("tui.cmd_serve", "serve the console in a browser (wall display), 127.0.0.1 only"),
}
NOT_AVAILABLE = 3
THEMES = ("dark", "light", "high-contrast", "colorblind")


def theme_name(value: str) -> str:
    """`--theme`: a theme name or an alias (as `[warroom] theme` takes) -> the canonical name."""
    import difflib

    import themes  # light: no textual

    try:
        return themes.resolve_name(value)
    except ValueError:
        pass
    names = [*themes.THEME_NAMES, *themes.ALIASES]
    hint = difflib.get_close_matches(value.strip().lower(), names, n=1)
    raise argparse.ArgumentTypeError(
        f"invalid choice: {value!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; choose from {', '.join(themes.THEME_NAMES)} or an alias: "
        + ", ".join(f"{a} = {n}" for a, n in themes.ALIASES.items()))


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", metavar="PATH", default=default,
                        help="config file (default: $WARROOM_CONFIG, ./warroom.toml, the XDG config dir)")


def build_parser(chosen: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="warroom",
        description="warroom: an on-call console for blockchain-backed backends. "
        "Without a subcommand, opens the console.",
    )
    _add_common(parser, suppress=False)
    parser.add_argument("--read-only", action="store_true", help="no action may change anything")
    parser.add_argument("--kiosk", action="store_true", help="wall display: read-only, cannot be quit with q")
    parser.add_argument("--bell", action="store_true", help="kiosk: ring the terminal bell on a new P0/P1")
    parser.add_argument("--cycle", type=float, metavar="SECONDS", help="kiosk: detail view period (default 15)")
    parser.add_argument("--theme", metavar="NAME", type=theme_name,
                        help="dark (default), light, high-contrast or colorblind "
                        "(aliases as in the config: hc, cb, colourblind, ...)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    subparsers = {}
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, conflict_handler="resolve")
        _add_common(sp, suppress=True)
        subparsers[name] = sp
    return parser, subparsers


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand in argv, if any (skipping values of the global options)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--config", "--theme", "--cycle"):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg if arg in SUBCOMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(argv)
    parser, subparsers = build_parser(chosen)
    module = None
    if chosen is not None:
        module_name = SUBCOMMANDS[chosen][0]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                print(f"warroom {chosen}: not available yet", file=sys.stderr)
                return NOT_AVAILABLE
            raise
        add = getattr(module, "add_arguments", None)
        if add is not None:
            add(subparsers[chosen])
    args = parser.parse_args(argv)
    try:
        if module is not None:
            return int(module.run(args) or 0)
        return run_console(args)
    except BrokenPipeError:  # `warroom health | head`: the reader went away; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- the console


def load_config(path: str | None):
    """The config object, or None when no config file exists and none was asked for."""
    try:
        config_mod = importlib.import_module("backends.config")
    except ModuleNotFoundError:
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"config file not found: {path}") from None
        return None
    for name in ("load_config", "load", "find_and_load"):
        fn = getattr(config_mod, name, None)
        if callable(fn):
            return fn(path)
    return None


def build_engine(config, *, read_only: bool, password_provider=None):
    """The engine the app runs on: `backends.engine` when it exists, else a bare one.
    `password_provider(keystore_path)` is asked for a keystore's password when a chain signs."""
    try:
        engine_mod = importlib.import_module("backends.engine")
    except ModuleNotFoundError:
        engine_mod = None
    if engine_mod is not None:
        for name in ("build_engine", "from_config", "build"):
            fn = getattr(engine_mod, name, None)
            if callable(fn):
                if password_provider is None:
                    return fn(config, read_only=read_only)
                return fn(config, read_only=read_only, password_provider=password_provider)
    from backends.actions import ActionEngine
    from backends.audit import AuditLog
    from backends.monitor import Monitor

    audit_path = os.path.expanduser(_conf(config, "audit_path", "~/.local/state/warroom/audit.jsonl"))
    actions = ActionEngine(AuditLog(audit_path), read_only=read_only)
    return SimpleNamespace(monitor=Monitor([]), actions=actions, config=config, logs=None)


def console_engine_factory(config, *, read_only: bool, get_app):
    """`() -> engine` for the console. A chain signing with a keystore asks for its password
    on the console `get_app()` returns when the key is used (the app may not exist yet when
    the engine is built: the kiosk builds it first)."""

    async def password_provider(keystore: str) -> str:
        from tui.screens.password import console_password_provider

        return await console_password_provider(get_app)(keystore)

    def factory():
        return build_engine(config, read_only=read_only, password_provider=password_provider)

    return factory


def _conf(config, key: str, default):
    section = getattr(config, "warroom", None) if config is not None else None
    value = getattr(section, key, None) if section is not None else None
    return default if value is None else value


def run_console(args: argparse.Namespace) -> int:
    # Startup allocates a lot and frees little: no garbage collection until the console
    # has started (about 10 % of the CPU before the first frame). Then what startup
    # built is frozen (never scanned again) and collection resumes.
    gc.disable()
    try:
        return _run_console(args)
    finally:
        _resume_gc()


def _resume_gc() -> None:
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _run_console(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except Exception as exc:  # config errors name file, line, key; print them as they are
        print(f"warroom: {exc}", file=sys.stderr)
        return 2
    read_only = bool(args.read_only or args.kiosk or _conf(config, "read_only", False))
    app = None
    factory = console_engine_factory(config, read_only=read_only, get_app=lambda: app)
    engine = None
    if args.kiosk:  # the wall display subscribes to the engine as it mounts: built first
        try:
            engine, factory = factory(), None
        except Exception as exc:
            return _cannot_start(exc)
    # else: built in a thread after the first frame (the shell) is on screen
    from tui.app import WarroomApp

    try:
        app = WarroomApp(engine, config=config, read_only=read_only, kiosk=args.kiosk, theme=args.theme,
                         engine_factory=factory)
    except ValueError as exc:  # e.g. an unknown theme: said plainly, no traceback
        print(f"warroom: {exc}", file=sys.stderr)
        return 2
    app.kiosk_bell, app.kiosk_cycle = args.bell, args.cycle  # read by tui.screens.kiosk
    app.started_hooks.append(_resume_gc)
    app.run()
    if app.startup_error is not None:
        return _cannot_start(app.startup_error)
    return int(app.return_code or 0)


def _cannot_start(exc: BaseException) -> int:
    from backends.errors import describe_exception

    print(f"warroom: cannot start: {describe_exception(exc)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
