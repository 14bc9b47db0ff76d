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

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("tui.cmd_check", "validate the config and its meaning (--live: against the running systems)"),
    "demo": ("sandbox.cli", "start the sandbox stack and open the console on it"),
    "drill": ("sandbox.drills_cli", "list fault drills, or inject one into the running sandbox"),
    "health": ("tui.cmd_health", "one-shot health report; exit 0 ok, 1 warn, 2 crit, 3 unknown"),
    "orders": ("tui.cmd_orders", "stuck orders headless: stuck | verify | fix | bulk-fix | report"),
    "audit": ("tui.cmd_audit", "the audit trail: tail | verify | repair | resolve"),
    "incident": ("tui.cmd_incident", "the escalation brief from live state (incidents are run in the console)"),
    "serve": ("tui.cmd_serve", "serve the console in a browser (wall display): 127.0.0.1, a token per run"),
    "record": ("tui.cmd_record", "the flight recorder, headless: every reading, finding, log line, action"),
    "replay": ("tui.cmd_replay", "replay a recording in the console (read-only), or --dump it as JSON lines"),
}
NOT_AVAILABLE = 3
# What `--read-only`, `--kiosk` and `[warroom] read_only = true` mean for each subcommand:
# they apply to every one (kiosk implies read-only); what is left to do is said here and
# enforced in the engine (backends/engine/readonly.py), the refusals audited.
READ_ONLY_MEANS: dict[str, str] = {
    "check": "nothing to refuse: check only reads the config",
    "demo": "the console it opens is read-only (kiosk: the wall display)",
    "drill": "the list and --status only; injecting a fault, --undo and --fix are refused",
    "health": "nothing to refuse: health only reads",
    "orders": "stuck, verify, report and dry-runs; --execute is refused",
    "audit": "tail and verify; repair is refused",
    "incident": "brief only reads",
    "serve": "the served console is read-only; --allow-actions is refused",
    "record": "nothing to refuse: record only watches",
    "replay": "a replay is always read-only",
}
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
        epilog="--read-only, --kiosk and read_only = true (config) hold for every command, "
        "enforced by the engine, refusals audited: "
        + "; ".join(f"{name}: {means}" for name, means in READ_ONLY_MEANS.items()) + ".",
    )
    _add_common(parser, suppress=False)
    parser.add_argument("--read-only", action="store_true",
                        help="no action may change anything (the console and every command)")
    parser.add_argument("--kiosk", action="store_true",
                        help="wall display: read-only (for every command too), cannot be quit with q")
    parser.add_argument("--bell", action="store_true", help="kiosk: ring the terminal bell on a new P0/P1")
    parser.add_argument("--cycle", type=float, metavar="SECONDS", help="kiosk: detail view period (default 15)")
    parser.add_argument("--no-record", action="store_true",
                        help="do not record the session even when [record] is set (the flight recorder)")
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


def synopsis(width: int = 100) -> str:
    """Every command's usage and one-line help, from the parsers themselves: the README's
    "Command line" block is this text (tests/test_hygiene.py checks it), so the two cannot
    disagree. Regenerate with `python -c 'import tui.cli as c; print(c.synopsis())'`."""
    import re
    import textwrap

    def usage(p: argparse.ArgumentParser, drop: str = "") -> str:
        text = " ".join(p.format_usage().split())
        text = re.sub(r"^usage: ", "", text).replace(" [-h]", "").replace(drop, "")
        return textwrap.fill(text, width, subsequent_indent="    ", break_on_hyphens=False,
                             break_long_words=False)

    parser, subparsers = build_parser()
    out = [usage(parser, drop=" COMMAND ..."), "    the console (no subcommand)"]
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        add = getattr(importlib.import_module(module_name), "add_arguments", None)
        if add is not None:
            add(subparsers[name])
        out += [usage(subparsers[name]), "    " + help_text]
    return "\n".join(out)


def _global_flags(argv: Sequence[str], chosen: str | None) -> set[str]:
    """`--read-only` / `--kiosk` given before the subcommand (a subcommand's own option of the
    same name must not reset them: argparse lets a subparser's default win)."""
    flags: set[str] = set()
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--config", "--theme", "--cycle"):
            skip = True
            continue
        if chosen is not None and arg == chosen:
            break
        if arg in ("--read-only", "--kiosk"):
            flags.add(arg)
    return flags


def _config_read_only(args: argparse.Namespace) -> bool:
    """`[warroom] read_only = true` in the config the subcommand will use (False when it
    cannot be read: the subcommand reports that itself)."""
    try:
        from backends.config import load_config as _load

        config = _load(getattr(args, "config", None))
    except Exception:
        return False
    return bool(getattr(getattr(config, "warroom", None), "read_only", False))


def apply_read_only(args: argparse.Namespace, argv: Sequence[str], chosen: str | None) -> None:
    """Read-only is a property of the process: `--kiosk` implies it, and the config's
    `read_only` counts for subcommands that do not build an engine of their own
    (`audit`, `serve`); `args.read_only` is then what every subcommand checks."""
    flags = _global_flags(argv, chosen)
    if "--kiosk" in flags:
        args.kiosk = True
    ro = bool(getattr(args, "read_only", False) or "--read-only" in flags or getattr(args, "kiosk", False))
    if not ro and chosen in ("audit", "serve"):
        ro = _config_read_only(args)
    args.read_only = ro


def _install_code_cache() -> None:
    """The code dataclasses generate, kept between runs (backends/codecache.py): about 1 ms
    less per class at import, ~120 of them before the console's first frame. What a run
    compiled anew is written after the console's start and at exit."""
    import atexit

    from backends import codecache

    if codecache.install() is not None:
        atexit.register(codecache.save)


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
    command = argv is None  # the command itself, not a test calling main()
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(argv)
    parser, subparsers = build_parser(chosen)
    module = None
    if command and chosen is not None:
        _install_code_cache()
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
    if command and chosen is None:  # the console (not `--help`, which exits above)
        _install_code_cache()
    if chosen is not None:
        apply_read_only(args, argv, chosen)
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
    """The config object (backends.config.load_config: the file asked for, else the one found)."""
    from backends.config import load_config as _load_config

    return _load_config(path)


def build_engine(config, *, read_only: bool, password_provider=None):
    """The engine the app runs on (backends.engine.core.build_engine).
    `password_provider(keystore_path)` is asked for a keystore's password when a chain signs."""
    from backends.engine.core import build_engine as _build_engine

    if password_provider is None:
        return _build_engine(config, read_only=read_only)
    return _build_engine(config, read_only=read_only, password_provider=password_provider)


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
    recorder = _recorder(config, app, no_record=getattr(args, "no_record", False))
    try:
        app.run()
    finally:
        if recorder is not None:
            recorder.close()
    if app.startup_error is not None:
        return _cannot_start(app.startup_error)
    return int(app.return_code or 0)


def _recorder(config, app, *, no_record: bool):
    """The flight recorder (backends/engine/recorder.py) when `[record]` is set and not `--no-record`:
    attached to the engine once it is wired (before it starts), closed after the app."""
    if no_record or getattr(config, "record", None) is None:
        return None
    from tui.cmd_record import make_recorder, recording_path

    recorder = make_recorder(config, recording_path(config, None))

    def attach() -> None:
        recorder.attach(app.engine)
        incidents = app.engine.incidents if app.engine is not None else None
        if incidents is not None:  # the postmortem draft (incident screen `p`) adds what it recorded
            incidents.recording_path = recorder.path

    app.started_hooks.append(attach)
    return recorder


def _cannot_start(exc: BaseException) -> int:
    from backends.errors import describe_exception

    print(f"warroom: cannot start: {describe_exception(exc)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
