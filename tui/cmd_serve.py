"""`warroom serve`: the console in a browser (wall display), with textual-serve.

    warroom serve [--host 127.0.0.1] [--port 8000] [--kiosk] [--allow-actions] [--token T]

Each browser tab gets its own console process (`python -m tui.cli ...`), read-only
unless `--allow-actions`. Bound to 127.0.0.1 by default; binding anything else needs a
token (`--token` or `$WARROOM_SERVE_TOKEN`): open `http://HOST:PORT/?token=...` once,
the page keeps it in an HttpOnly cookie for the websocket. The websocket also refuses
a foreign Origin (another site's page cannot drive the console).

The app process runs in its own process group. When its browser disconnects (or the
server stops), the server asks it to quit, closes its stdin, and kills the whole group
if it has not exited within a grace period; the app's driver (tui.serve_app) exits by
itself on stdin EOF or a broken stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("warroom.serve")

DRIVER = "tui.serve_app:WarroomWebDriver"
COOKIE = "warroom_token"
TOKEN_ENV = "WARROOM_SERVE_TOKEN"
STOP_GRACE = 5.0  # seconds the app may take to quit before its process group is killed
KILL_GRACE = 2.0  # after SIGTERM, before SIGKILL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else needs --token)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--kiosk", action="store_true", help="serve the wall display (kiosk) view")
    parser.add_argument("--bell", action="store_true", help="kiosk: terminal bell on a new P0/P1")
    parser.add_argument("--cycle", type=float, default=None, metavar="SECONDS",
                        help="kiosk: detail view period")
    parser.add_argument("--allow-actions", action="store_true",
                        help="let the browser run actions (default: read-only)")
    parser.add_argument("--token", default=None,
                        help=f"access token (default ${TOKEN_ENV}); required beyond loopback")
    parser.add_argument("--theme", default=None, help="theme of the served console")
    parser.add_argument("--public-url", default=None,
                        help="URL the browser uses to reach this server (default http://HOST:PORT)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name may resolve to anything


def app_argv(args: argparse.Namespace) -> list[str]:
    """The command of one served console process."""
    argv = [sys.executable, "-m", "tui.cli"]
    config = getattr(args, "config", None)
    if config:
        argv += ["--config", os.path.abspath(config)]
    if not getattr(args, "allow_actions", False):
        argv.append("--read-only")
    if getattr(args, "kiosk", False):
        argv.append("--kiosk")
        if getattr(args, "bell", False):
            argv.append("--bell")
        if getattr(args, "cycle", None):
            argv += ["--cycle", str(args.cycle)]
    if getattr(args, "theme", None):
        argv += ["--theme", args.theme]
    return argv


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        print(f"warroom serve: refusing to bind {args.host} without a token "
              f"(--token or ${TOKEN_ENV}); 127.0.0.1 needs none", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"warroom serve: bad port {args.port}", file=sys.stderr)
        return 2
    server = make_server(app_argv(args), host=args.host, port=args.port, token=token,
                         public_url=args.public_url,
                         title="warroom" + (" kiosk" if args.kiosk else ""))
    mode = "actions allowed" if args.allow_actions else "read-only"
    print(f"warroom serve: http://{args.host}:{args.port}/ ({mode}"
          f"{', token required' if token else ''})", file=sys.stderr, flush=True)
    server.serve()
    return 0


# --------------------------------------------------------------------------- server


def make_server(argv: list[str], *, host: str = "127.0.0.1", port: int = 8000,
                token: str | None = None, public_url: str | None = None, title: str = "warroom",
                stop_grace: float = STOP_GRACE):
    """A textual-serve Server that runs `argv` per browser, with the fixes described above."""
    from aiohttp import WSMsgType, web  # noqa: F401 - imported lazily (heavy)
    from textual_serve.app_service import AppService
    from textual_serve.server import Server

    class WarroomAppService(AppService):
        """One app process: exec'd without a shell, in its own process group, killed on stop."""

        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            import shlex

            super().__init__(shlex.join(argv), **kwargs)
            self.argv = argv
            self.pgid: int | None = None

        def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
            env = super()._build_environment(width, height)
            env["TEXTUAL_DRIVER"] = DRIVER
            return env

        async def _open_app_process(self, width: int = 80, height: int = 24):
            env = self._build_environment(width=width, height=height)
            self._process = process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
            self.pgid = process.pid  # start_new_session: the child leads its own group
            self._stdin = process.stdin
            return process

        async def stop(self) -> None:
            """Quit the app; after `stop_grace` kill its process group. Idempotent."""
            process = self._process
            if process is None:
                return
            self._process = None
            with contextlib.suppress(Exception):
                await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
            if process.returncode is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.send_meta({"type": "quit"}), 1.0)
                with contextlib.suppress(Exception):  # EOF: the driver exits on it too
                    if self._stdin is not None:
                        self._stdin.close()
                try:
                    await asyncio.wait_for(process.wait(), stop_grace)
                except TimeoutError:
                    log.warning("app %s did not quit in %ss: killing its process group",
                                process.pid, stop_grace)
                    self.kill_group(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), KILL_GRACE)
                    except TimeoutError:
                        self.kill_group(signal.SIGKILL)
                        await process.wait()
            self.kill_group(signal.SIGKILL)  # anything it left behind in its group
            task, self._task = self._task, None
            if task is not None:
                try:
                    await asyncio.wait_for(task, 2.0)
                except TimeoutError:
                    task.cancel()
                except Exception:
                    pass

        def kill_group(self, sig: int) -> None:
            if self.pgid is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    class WarroomServer(Server):
        def __init__(self) -> None:
            import shlex

            super().__init__(shlex.join(argv), host=host, port=port, title=title,
                             public_url=public_url)
            self.argv = argv
            self.token = token
            self.services: set[WarroomAppService] = set()

        def initialize_logging(self) -> None:
            logging.basicConfig(level="DEBUG" if self.debug else "INFO",
                                format="%(asctime)s %(name)s %(message)s")

        async def on_startup(self, app: web.Application) -> None:  # no logo banner
            log.info("serving on %s", self.public_url)

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(self._auth)
            app.on_shutdown.append(self._stop_all)
            return app

        @web.middleware
        async def _auth(self, request: web.Request, handler):
            if self.token is not None:
                given = (request.query.get("token") or request.cookies.get(COOKIE)
                         or request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
                if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                    return web.Response(status=401, text="warroom: token required (open /?token=...)\n")
            if request.path == "/ws" and not self._same_origin(request):
                return web.Response(status=403, text="warroom: websocket from another origin\n")
            response = await handler(request)
            if self.token is not None and request.query.get("token") and request.path == "/":
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
            return response

        def _same_origin(self, request: web.Request) -> bool:
            origin = request.headers.get("Origin")
            if not origin:
                return True  # not a browser page (a browser always sends Origin on websockets)
            allowed = {request.host}
            if self.public_url:
                allowed.add(urlsplit(self.public_url).netloc)
            return urlsplit(origin).netloc in allowed

        async def _stop_all(self, _app: web.Application) -> None:
            await asyncio.gather(*(s.stop() for s in list(self.services)), return_exceptions=True)

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            """textual-serve's handler with our app service; the app stops on any exit path."""
            from textual_serve.server import to_int

            websocket = web.WebSocketResponse(heartbeat=15)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            service: WarroomAppService | None = None
            try:
                await websocket.prepare(request)
                service = WarroomAppService(
                    self.argv, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                    close=websocket.close, download_manager=self.download_manager, debug=self.debug)
                self.services.add(service)
                await service.start(width, height)
                if service._task is not None:  # the app ended by itself: close the page's socket
                    service._task.add_done_callback(
                        lambda _t: asyncio.ensure_future(websocket.close()))
                await self._process_messages(websocket, service)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await websocket.close()
            except Exception as error:  # a bad message must not leave the app running
                log.warning("websocket: %s", error)
            finally:
                if service is not None:
                    await asyncio.shield(service.stop())
                    self.services.discard(service)
            return websocket

    return WarroomServer()
