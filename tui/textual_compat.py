"""Every use of a Textual private API lives here (Textual 8.2.8), each with a test in
tests/test_textual_compat.py that fails when an upgrade changes it.

The crash guard: Textual ends the app on any exception a message handler, a callback,
a timer or a worker (exit_on_error) raises, and a message pump whose handler raised stops
processing messages. `install_crash_guard()` wraps the two places messages and callbacks
are dispatched (`MessagePump._dispatch_message`, `MessagePump._flush_next_callbacks`)
so that, in an app that opted in (`CrashGuardApp`), the exception is handed to the
app's `report_failure(error, where)` and the pump goes on; `CrashGuardApp` overrides
`App._handle_exception` (timers, workers, compose) the same way. Anything raised while
the app is starting or closing still ends it, as Textual does.
"""

from __future__ import annotations

import functools
import inspect
import os
from bisect import bisect_left
from typing import Any

from textual._border import get_box  # noqa: F401 - re-exported for widgets/logs.py
from textual._compositor import ChopsUpdate, Compositor
from textual._styles_cache import StylesCache
from textual.app import App
from textual.geometry import Region
from textual.message_pump import MessagePump
from textual.worker import WorkerFailed

__all__ = ["CrashGuardApp", "StylesCache", "app_driver", "app_keymap", "app_shutdown", "clear_styles_cache",
           "drop_watchers", "get_box", "install_crash_guard", "install_sparse_frames", "normalize_keymap",
           "own_bindings", "sparse_partial_update",
           "set_widget_styles_cache", "widget_styles_cache"]

_installed = False


def _guarded_app(pump: MessagePump) -> Any:
    """The app when it takes failures itself (a running CrashGuardApp), else None."""
    try:
        app = pump.app
    except Exception:
        return None
    if not isinstance(app, CrashGuardApp) or not app.crash_guard_active():
        return None
    return app


def _where(pump: Any, message: Any = None) -> str:
    name = type(pump).__name__
    ident = getattr(pump, "id", None)
    who = f"{name}#{ident}" if ident else name
    if message is None:
        return who
    return f"{who} handling {type(message).__name__}"


def _hand_over(pump: MessagePump, error: Exception, where: str) -> None:
    """To the app's report when it takes failures; else raised again, as Textual expects."""
    app = _guarded_app(pump)
    if app is None:
        raise error
    app.report_failure(error, where)


def install_crash_guard() -> None:
    """Wrap Textual's message and callback dispatch once per process (idempotent)."""
    global _installed
    if _installed:
        return
    original_dispatch = MessagePump._dispatch_message
    original_flush = MessagePump._flush_next_callbacks

    @functools.wraps(original_dispatch)
    async def _dispatch_message(self: MessagePump, message: Any) -> None:
        try:
            await original_dispatch(self, message)
        except Exception as error:  # CancelledError, KeyboardInterrupt, SystemExit are not Exception
            _hand_over(self, error, _where(self, message))

    @functools.wraps(original_flush)
    async def _flush_next_callbacks(self: MessagePump) -> None:
        from textual._callback import invoke

        if _guarded_app(self) is None:
            await original_flush(self)
            return
        callbacks = self._next_callbacks.copy()
        self._next_callbacks.clear()
        for callback in callbacks:  # one failing callback no longer drops the others
            try:
                with self.prevent(*callback._prevent):
                    await invoke(callback.callback)
            except Exception as error:
                name = getattr(callback.callback, "__qualname__", repr(callback.callback))
                _hand_over(self, error, f"{_where(self)} callback {name}")

    MessagePump._dispatch_message = _dispatch_message  # type: ignore[method-assign]
    MessagePump._flush_next_callbacks = _flush_next_callbacks  # type: ignore[method-assign]
    _installed = True


class CrashGuardApp(App):
    """An App whose failures after start-up are reported, not fatal (see the module doc).
    Subclasses implement `report_failure(error, where)`."""

    _crash_guard_on = False

    def crash_guard_active(self) -> bool:
        return self._crash_guard_on and not self._exit and self.is_running

    def enable_crash_guard(self) -> None:
        install_crash_guard()
        self._crash_guard_on = True

    def disable_crash_guard(self) -> None:
        self._crash_guard_on = False

    def report_failure(self, error: BaseException, where: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _handle_exception(self, error: Exception) -> None:
        if self.crash_guard_active():
            inner = error.error if isinstance(error, WorkerFailed) else error
            where = "a worker" if isinstance(error, WorkerFailed) else "a timer or widget"
            self.report_failure(inner, where)
            return
        super()._handle_exception(error)


# --------------------------------------------------------------------------- other private uses


async def app_shutdown(app: App) -> None:
    """Textual's own shutdown sequence (`App._shutdown`), called from an override."""
    await App._shutdown(app)


def clear_styles_cache() -> None:
    """Empty Textual's memo of StylesCache.get_inner_outer (a class-level lru_cache(1024)
    whose keys hold each widget's StylesCache: it keeps removed widgets alive)."""
    clear = getattr(StylesCache.get_inner_outer, "cache_clear", None)
    if callable(clear):
        clear()


def app_driver(app: Any) -> Any:
    """The driver an app writes the terminal through (Textual keeps it in `_driver`)."""
    return getattr(app, "_driver", None)


def widget_styles_cache(widget: Any) -> Any:
    """A widget's own StylesCache (its rendered lines), or None."""
    return getattr(widget, "_styles_cache", None)


def set_widget_styles_cache(widget: Any, cache: Any) -> None:
    """Give a widget a StylesCache of its own (a subclass: the log tail's row fast path)."""
    widget._styles_cache = cache


def drop_watchers(owners: Any, nodes: Any) -> None:
    """Forget the reactive watchers that removed `nodes` registered on `owners`: Textual
    keeps them in the watched object's `__watchers` ({attribute: [(node, callback)]}) and
    drops a detached node's entries only when that attribute changes again."""
    gone = {id(n) for n in nodes}
    for owner in owners:
        watchers = getattr(owner, "__watchers", None)
        if not isinstance(watchers, dict):
            continue
        for entries in watchers.values():
            if any(id(node) in gone for node, _ in entries):
                entries[:] = [(node, cb) for node, cb in entries if id(node) not in gone]


def own_bindings(node: Any) -> Any:
    """The BindingsMap a node was built with (Textual keeps it in `_bindings`)."""
    return node._bindings


def app_keymap(app: Any) -> dict:
    """The keymap an app has applied (`App.set_keymap`; Textual keeps it in `_keymap`)."""
    return dict(getattr(app, "_keymap", {}) or {})


def normalize_keymap(app: Any, keymap: dict) -> dict:
    """Textual's own normalisation of a keymap's keys (`App._normalize_keymap`)."""
    return app._normalize_keymap(keymap)


def set_border_subtitle_row(widget: Any, text: str) -> None:
    """Set a widget's border subtitle and repaint only its bottom border row.

    Textual's `border_subtitle` setter repaints the whole widget: for a pane whose status
    line changes each second (the log tail's counts) that is its whole region on every
    change. The text is stored as the setter stores it (`_border_subtitle`, the descriptor's
    `_internal_name`) and the row is refreshed alone. Anything unexpected (no bottom border,
    not mounted, another Textual) goes through the public setter."""
    internal = getattr(inspect.getattr_static(type(widget), "border_subtitle", None), "_internal_name", None)
    outer = getattr(widget, "outer_size", None)
    if (internal != "_border_subtitle" or not getattr(widget, "is_mounted", False) or not outer
            or widget.styles.border_bottom[0] in ("", "none", "hidden", "blank")):
        widget.border_subtitle = text
        return
    setattr(widget, internal, widget.render_str(text).expand_tabs(4).split()[0])
    offset = widget.content_offset  # refresh() regions are in content coordinates
    widget.refresh(Region(-offset.x, outer.height - 1 - offset.y, outer.width, 1))


# --------------------------------------------------------------------------- sparse frames

_ORIGINAL_PARTIAL_UPDATE = Compositor.render_partial_update


def sparse_partial_update(compositor: Any) -> Any:
    """`Compositor.render_partial_update` that renders only the lines a frame shows.

    Textual's version takes the bounding box of every changed region and has each widget
    that overlaps it render all of its visible lines, then keeps the lines that changed:
    the header's clock (row 0) and a log row near the bottom make every pane, its slot and
    the screen render every line (9-14 ms a frame on the sandbox at 160x48, most of the
    console's drawing). Here each widget renders only the rows between the first and last
    changed line it covers, and a widget whose chops on a line are all painted already by a
    widget in front of it is not asked for that line. What reaches the terminal is the same:
    the same chops win (front to back, the first one for a cut), only lines nobody shows
    are not rendered (tests/test_textual_compat.py compares the two on a live screen)."""
    screen = compositor.size.region
    update_regions = {r for r in (screen.intersection(r) for r in compositor._dirty_regions) if r}
    compositor._dirty_regions.clear()
    if not update_regions:
        return None
    spans = list(compositor._regions_to_spans(update_regions))
    rendered = sorted({y for y, _, _ in spans})
    cuts = compositor.cuts
    chops: list[Any] = [None] * len(cuts)  # ChopsUpdate reads the lines of `spans` only
    for y in rendered:
        chops[y] = dict.fromkeys(cuts[y][:-1])
    intersection = Region.intersection
    for widget, (region, clip) in compositor.visible_widgets.items():
        rx, ry, rw, rh = intersection(region, clip)
        if not rw or not rh:
            continue
        right = rx + rw
        lo, hi = bisect_left(rendered, ry), bisect_left(rendered, ry + rh)
        ys = []
        for y in rendered[lo:hi]:
            line = chops[y]
            for cut in cuts[y]:
                if rx <= cut < right and line.get(cut, 0) is None:  # a chop no one painted yet
                    ys.append(y)
                    break
        if not ys:
            continue
        top = ys[0]
        strips = widget.render_lines(Region(rx - region.x, top - region.y, rw, ys[-1] - top + 1))
        for y in ys:
            line = chops[y]
            final_cuts = [cut for cut in cuts[y] if right >= cut >= rx]
            pieces = strips[y - top].divide([cut - rx for cut in final_cuts[1:]])
            get = line.get
            for cut, piece in zip(final_cuts, pieces, strict=False):
                if get(cut) is None:
                    line[cut] = piece
    return ChopsUpdate(chops, spans, [cut_set[1:] for cut_set in cuts])


def textual_partial_update(compositor: Any) -> Any:
    """Textual's own `render_partial_update` (tests compare it with the sparse one)."""
    return _ORIGINAL_PARTIAL_UPDATE(compositor)


def install_sparse_frames() -> bool:
    """Use `sparse_partial_update` for every screen (`WARROOM_SPARSE_FRAMES=0`: Textual's)."""
    if os.environ.get("WARROOM_SPARSE_FRAMES", "1") == "0":
        Compositor.render_partial_update = _ORIGINAL_PARTIAL_UPDATE  # type: ignore[method-assign]
        return False
    Compositor.render_partial_update = sparse_partial_update  # type: ignore[method-assign,assignment]
    return True
