"""What the headless subcommands (`health`, `orders`, `audit`, `incident`) share.

No Textual here or in those commands: they run from cron, CI and flaky SSH links.
Loading the config and building the engine, running one async job with a bound on
its time, closing every pool afterwards, a rich console that turns plain when piped,
and a progress reporter (a bar on a terminal, plain lines otherwise).

Exit codes (monitoring-plugin style, shared by the headless commands):
0 ok, 1 warn / something left to do, 2 critical / refused / failed, 3 unknown
(the config or a source could not be read).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

EXIT_OK = 0
EXIT_WARN = 1
EXIT_CRIT = 2
EXIT_UNKNOWN = 3


class Exit(Exception):
    """Stop the command: print `message` to stderr and exit with `code`."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def add_common(parser: argparse.ArgumentParser, *, timeout: float | None = 60.0) -> None:
    """Options every headless command accepts after its name (kept when given before it)."""
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $WARROOM_CONFIG, ./warroom.toml, the XDG config dir)")
    parser.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                        help="refuse every change (dry-runs still work)")
    if timeout is not None:
        parser.add_argument("--timeout", metavar="SECONDS", type=float, default=timeout,
                            help=f"give up after this long (default {timeout:g}s); each source "
                                 "also has its own timeout from the config")


def load_config(args: argparse.Namespace) -> Any:
    from backends.config import load_config as _load
    from backends.errors import ConfigError

    try:
        return _load(getattr(args, "config", None))
    except ConfigError as exc:
        raise Exit(EXIT_UNKNOWN, f"config: {exc}") from None


def build(args: argparse.Namespace, *, with_logs: bool = True) -> Any:
    """The engine for the command's config (`--read-only` wins over the config)."""
    from backends.engine.core import build_engine
    from backends.errors import describe_exception

    config = load_config(args)
    try:
        return build_engine(config, read_only=True if getattr(args, "read_only", False) else None,
                            with_logs=with_logs)
    except Exception as exc:  # a broken part of the config: say what, never a traceback
        raise Exit(EXIT_UNKNOWN, f"cannot build the engine: {describe_exception(exc)}") from None


def run_job(prog: str, job: Callable[[], Awaitable[int]], *, engine: Any = None,
            timeout: float | None = None) -> int:
    """Run `job()` on a fresh loop, bounded by `timeout`; always stop the engine.

    Errors become one line on stderr and an exit code, never a traceback.
    """
    from backends.errors import ActionRefused, BackendError, describe_exception
    from backends.sanitize import inert  # reasons carry outside text (RPC errors, bodies)

    async def main() -> int:
        try:
            if timeout:
                return await asyncio.wait_for(job(), timeout)
            return await job()
        finally:
            if engine is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(engine.stop(), 10)

    try:
        return asyncio.run(main())
    except Exit as exc:
        if exc.message:
            print(f"{prog}: {inert(exc.message)}", file=sys.stderr)
        return exc.code
    except ActionRefused as exc:
        print(f"{prog}: refused: {inert(exc.reason)}", file=sys.stderr)
        return EXIT_CRIT
    except BackendError as exc:
        print(f"{prog}: {exc.source} cannot be read: {inert(exc.reason)}", file=sys.stderr)
        return EXIT_UNKNOWN
    except TimeoutError:
        print(f"{prog}: timed out" + (f" after {timeout:g}s" if timeout else ""), file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: one readable line
        print(f"{prog}: {inert(describe_exception(exc))}", file=sys.stderr)
        return EXIT_UNKNOWN


def console(*, stderr: bool = False):
    """A rich Console on stdout (stderr): colours and tables on a terminal, plain text when piped."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def is_tty(stream: Any = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress_reporter(title: str, total: int | None) -> Iterator[Callable[[Any], None]]:
    """A `ProgressFn`: a rich progress bar on a terminal, plain `progress:` lines when piped."""
    if is_tty():
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from backends.sanitize import inert

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console(), transient=False) as bar:
            task = bar.add_task(escape(title), total=total)

            def update(p: Any) -> None:
                bar.update(task, completed=p.done, total=p.total if p.total is not None else total,
                           description=escape(f"{title}: {inert(p.message)}" if p.message else title))

            yield update
        return

    def plain(p: Any) -> None:
        from backends.sanitize import inert

        of = f"/{p.total}" if p.total is not None else ""
        print(f"progress: {p.done}{of}" + (f" {inert(p.message)}" if p.message else ""), flush=True)

    yield plain


async def ask(prompt: str) -> str:
    """Read one line from the terminal without blocking the loop."""
    try:
        return (await asyncio.to_thread(input, prompt)).strip()
    except EOFError:
        return ""
