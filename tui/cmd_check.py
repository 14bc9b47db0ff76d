"""`warroom check [--config PATH]`: validate the configuration without connecting.

Prints a summary of what is configured and exits 0; on errors prints them all to
stderr and exits 2. Imports only the config loader (no Textual, no adapters).
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


def run(args: argparse.Namespace) -> int:
    from backends.config import find_config, load_config
    from backends.errors import ConfigError

    try:
        path = find_config(getattr(args, "config", None))
        config = load_config(path)
    except ConfigError as e:
        print(f"warroom check: {e}", file=sys.stderr)
        return EXIT_INVALID
    for line in config.summary():
        print(line)
    print("config OK")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warroom check", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
