"""`warroom serve`: the console in a browser (wall display), with textual-serve.

    warroom serve [--host 127.0.0.1] [--port 8000] [--kiosk] [--allow-actions]
                  [--token T | --no-token] [--public-url URL]

Each browser tab gets its own console process (`python -m tui.cli ...`), read-only
unless `--allow-actions` (refused with `--read-only`, `--kiosk` or `read_only = true`).

Closed to the outside:
- a token is needed by default: one is generated per run and printed once, in the URL
  to open (`http://HOST:PORT/?token=...`); `--token` or `$WARROOM_SERVE_TOKEN` sets it;
  `--no-token` opts out on a single-user box (loopback only, never with
  `--allow-actions`). The page keeps the token in an HttpOnly, SameSite=Strict cookie
  for the websocket; the access log shows it masked;
- the Host header must name the bound address (`127.0.0.1:PORT`, `localhost:PORT` on
  loopback; any IP literal at PORT on a wildcard bind) or the `--public-url`: a name
  that merely resolves here (DNS rebinding: `Host: evil.example:PORT`) is refused (421);
- a websocket's Origin, when sent, must be one of those same addresses (not merely
  equal to the Host the client sent), so another site's page cannot drive the console.

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


def _port(text: str) -> int:
    """A TCP port: 1-65535 (99999 was accepted and failed later in the server)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else needs --token)")
    parser.add_argument("--port", type=_port, default=8000, help="port 1-65535 (default 8000)")
    parser.add_argument("--kiosk", action="store_true", help="serve the wall display (kiosk) view")
    parser.add_argument("--bell", action="store_true", help="kiosk: terminal bell on a new P0/P1")
    parser.add_argument("--cycle", type=float, default=None, metavar="SECONDS",
                        help="kiosk: detail view period")
    parser.add_argument("--allow-actions", action="store_true",
                        help="let the browser run actions (default: read-only)")
    parser.add_argument("--token", default=None,
                        help=f"access token (default ${TOKEN_ENV}, else one generated for this run)")
    parser.add_argument("--no-token", action="store_true",
                        help="no token (a single-user box; loopback only, never with --allow-actions)")
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


def _refused(text: str) -> int:
    print(f"warroom serve: {text}", file=sys.stderr)
    return 2


def _audit_refusal(args: argparse.Namespace, reason: str) -> None:
    """The refusal goes to the config's audit trail (when the config can be read)."""
    try:
        from backends.config import load_config
        from backends.engine.audit import AuditLog
        from backends.engine.readonly import refuse_soon

        refuse_soon(AuditLog(load_config(getattr(args, "config", None)).audit_path), "serve.allow_actions",
                    f"serve:{args.host}:{args.port}", reason)
    except Exception:  # ActionRefused once written; a config that cannot be read: refused all the same
        pass


def resolve_token(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(token, generated): --token, $WARROOM_SERVE_TOKEN, else a fresh one (unless --no-token)."""
    import secrets

    if getattr(args, "no_token", False):
        return None, False
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
    if token:
        return token, False
    return secrets.token_urlsafe(18), True


def run(args: argparse.Namespace) -> int:
    read_only = bool(getattr(args, "read_only", False))
    if getattr(args, "no_token", False) and getattr(args, "token", None):
        return _refused("--token and --no-token contradict each other")
    if args.allow_actions and read_only:
        reason = ("--allow-actions is refused: this process is read-only "
                  "(--read-only, --kiosk or read_only = true in the config)")
        _audit_refusal(args, reason)
        return _refused(reason)
    if not 0 < args.port < 65536:
        return _refused(f"bad port {args.port}")
    token, generated = resolve_token(args)
    if token is None and args.allow_actions:
        return _refused("--allow-actions always needs a token (drop --no-token)")
    if token is None and not is_loopback(args.host):
        return _refused(f"refusing to bind {args.host} without a token (drop --no-token, "
                        f"or --token / ${TOKEN_ENV}); --no-token is for 127.0.0.1 only")
    server = make_server(app_argv(args), host=args.host, port=args.port, token=token,
                         public_url=args.public_url,
                         title="warroom" + (" kiosk" if args.kiosk else ""))
    mode = "actions allowed" if args.allow_actions else "read-only"
    base = (args.public_url or f"http://{_netloc(args.host, args.port)}").rstrip("/")
    if token is None:
        print(f"warroom serve: {base}/ ({mode}, no token: anyone on this box can open it)",
              file=sys.stderr, flush=True)
    else:
        shown = f"{base}/?token={token}" if generated else f"{base}/?token=<your token>"
        print(f"warroom serve: open {shown} ({mode}"
              + ("; the token was generated for this run and is shown only here)" if generated else ")"),
              file=sys.stderr, flush=True)
    server.serve()
    return 0


def _netloc(host: str, port: int) -> str:
    h = host.strip("[]")
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


def allowed_hosts(host: str, port: int, public_url: str | None) -> tuple[set[str], bool]:
    """(the Host header values this server answers to, whether any IP literal at PORT is
    fine too: a wildcard bind). Names other than localhost and the public URL's are not:
    a name can be made to resolve here (DNS rebinding)."""
    h = host.strip("[]").lower()
    allowed = {_netloc(h, port)}
    if is_loopback(h) or h in ("0.0.0.0", "::"):
        allowed |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    if public_url:
        parts = urlsplit(public_url)
        if parts.hostname:
            default = 443 if parts.scheme in ("https", "wss") else 80
            allowed.add(_netloc(parts.hostname.lower(), parts.port or default))
            if parts.port is None:
                allowed.add(parts.hostname.lower() if ":" not in parts.hostname else f"[{parts.hostname}]")
    if port in (80, 443):  # a browser leaves the default port out of Host
        allowed |= {a.rsplit(":", 1)[0] for a in allowed if a.endswith(f":{port}")}
    return allowed, h in ("0.0.0.0", "::", "")


def host_ok(value: str | None, allowed: set[str], any_ip_at: int | None) -> bool:
    """Is the Host header (or an Origin's netloc) one this server answers to?"""
    if not value:
        return False
    v = value.strip().lower()
    if v in allowed:
        return True
    if any_ip_at is not None:
        try:  # a bad port ("1.2.3.4:80.evil.example") raises ValueError too
            parts = urlsplit(f"//{v}")
            ipaddress.ip_address((parts.hostname or "").strip("[]"))
            return parts.port == any_ip_at
        except ValueError:
            return False
    return False


class _MaskTokens(logging.Filter):
    """The access log (request line, Referer) never shows a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        import re

        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = re.sub(r"token=[^&\s\"']*", "token=***", record.msg)
        return True


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
            self.allowed, wildcard = allowed_hosts(host, port, public_url)
            self.any_ip_at = port if wildcard else None

        def initialize_logging(self) -> None:
            logging.basicConfig(level="DEBUG" if self.debug else "INFO",
                                format="%(asctime)s %(name)s %(message)s")
            logging.getLogger("aiohttp.access").addFilter(_MaskTokens())

        async def on_startup(self, app: web.Application) -> None:  # no logo banner
            log.info("serving on %s", self.public_url)

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(self._auth)
            app.on_shutdown.append(self._stop_all)
            return app

        @web.middleware
        async def _auth(self, request: web.Request, handler):
            if not host_ok(request.headers.get("Host"), self.allowed, self.any_ip_at):
                return web.Response(status=421, text="warroom: this server does not answer to that Host\n")
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
            """The Origin, when sent, is one of this server's own addresses (never compared
            with the Host the client sent: both are the attacker's under DNS rebinding)."""
            origin = request.headers.get("Origin")
            if origin is None:
                return True  # not a browser page (a browser always sends Origin on websockets)
            try:
                parts = urlsplit(origin)
                port = parts.port  # ValueError on a port that is not a number
            except ValueError:
                return False
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.username is not None:
                return False  # "null" (a sandboxed frame, a file: page), user@host and the like
            netloc = parts.netloc.lower()
            if port is None:
                netloc += ":443" if parts.scheme == "https" else ":80"
            return host_ok(netloc, self.allowed, self.any_ip_at) or host_ok(parts.netloc, self.allowed,
                                                                             self.any_ip_at)

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
