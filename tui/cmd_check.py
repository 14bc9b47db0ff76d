"""`warroom check [--config PATH] [--live] [--keys [SECTION]]`: validate the configuration (meaning too).

Prints a summary of what is configured and exits 0; on errors prints them all to
stderr and exits 2. Beyond syntax it checks meaning without connecting (`backends.engine.semantic`:
the orders event is in the contract's ABI, programs exist on PATH, channel URLs are ones
apprise loads); `--live` also asks the live systems (the orders id_encoding against recent
release events on chain, check paths against one answer), each call with a timeout.
Warnings are printed but do not fail the check. Imports no Textual.

`--keys [SECTION]` reads no config: it lists the keys of every section (or of SECTION and its
sub-tables, or of one key: `chain`, `chain.contracts`, `chain.max_answer`) with their default,
secret flag, doc and the type and limits a value must have, from backends/config/schema.py.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # A `--config` given before the subcommand is kept (default=SUPPRESS does not overwrite it).
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $WARROOM_CONFIG, ./warroom.toml, then the XDG config dir)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="also check against the live systems: id_encoding vs recent release events, check paths vs one answer",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="warnings fail the check too (a program not on PATH, a live answer that could not be read)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="time limit of each live call (default 5)",
    )
    parser.add_argument(
        "--keys",
        metavar="SECTION",
        nargs="?",
        const="",
        default=None,
        help="list the configuration's keys (of SECTION, e.g. chain, chain.contracts, checks.url): "
        "default, [secret], doc, type and limits; reads no config",
    )


def list_keys(section: str) -> int:
    """`--keys [SECTION]`: the schema's keys, to stdout; an unknown SECTION: exit 2."""
    from backends.config import schema

    try:
        selection = schema.select(section)
    except ValueError as e:
        print(f"warroom check: {e}", file=sys.stderr)
        return EXIT_INVALID
    for line in schema.describe(selection, detail=True):
        print(line)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    keys = getattr(args, "keys", None)
    if keys is not None:
        return list_keys(keys)
    from backends.config import find_config, load_config
    from backends.errors import ConfigError

    try:
        path = find_config(getattr(args, "config", None))
        config = load_config(path)
    except ConfigError as e:
        print(f"warroom check: {e}", file=sys.stderr)
        return EXIT_INVALID
    import asyncio

    from backends.engine.semantic import ERROR, WARNING, check_config

    problems = asyncio.run(check_config(config, live=bool(getattr(args, "live", False)), filename=str(path),
                                        budget=float(getattr(args, "timeout", 5.0))))
    strict = bool(getattr(args, "strict", False))
    errors = [p for p in problems if p.severity == ERROR or (strict and p.severity == WARNING)]
    if errors:
        print(f"warroom check: {len(errors)} error{'s' if len(errors) != 1 else ''} in configuration:",
              file=sys.stderr)
    for p in problems:
        print(p.render(), file=sys.stderr)
    if errors:
        return EXIT_INVALID
    for line in config.summary():
        print(line)
    warned = len(problems)
    print("config OK" + (f" ({warned} warning{'s' if warned != 1 else ''} above)" if warned else "")
          + ("" if getattr(args, "live", False) else "; --live also checks against the running systems"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom check", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
