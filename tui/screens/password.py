"""The keystore password, asked at the moment of signing (`chain.pause` / `chain.unpause`
on a chain with `keystore = ...`).

`console_password_provider(get_app)` is what the console passes to `build_engine`: the
signer calls it with the keystore's path while the action runs (in the action modal's
worker); it shows `PasswordScreen` over the modal and returns the typed password, or
refuses ("no password given") on escape. The password is never logged, stored, audited
or shown: the field is masked, cleared when the screen closes, and only handed to the
signer, which drops it after decrypting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static
from textual.worker import NoActiveWorker, get_current_worker

from backends.errors import ActionRefused

NOT_GIVEN = "no password given"
NO_CONSOLE = "the keystore needs a password and none can be asked"


class PasswordScreen(ModalScreen[str | None]):
    """A masked field for one keystore's password: enter gives it, escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="password_cancel")]
    DEFAULT_CSS = """
    #password-dialog { width: 72; max-width: 96%; height: auto; border: thick $warning;
                       background: $surface; padding: 0 1; }
    #password-dialog Static { margin: 0 0 1 0; }
    """

    def __init__(self, keystore: str) -> None:
        super().__init__(id="password-modal")
        self.keystore = str(keystore)

    def compose(self) -> ComposeResult:
        with Vertical(id="password-dialog") as box:
            box.border_title = "Keystore password"
            box.border_subtitle = "enter: sign · escape: cancel"
            yield Static(Text.assemble(("Keystore  ", "dim"), (Path(self.keystore).name, "bold"),
                                       (f"  ({self.keystore})", "dim")), id="password-keystore")
            yield Static("The transaction is signed with this key. The password is not kept.",
                         id="password-note")
            yield Input(password=True, placeholder="password", id="password-input")

    def on_mount(self) -> None:
        self.query_one("#password-input", Input).focus()

    @on(Input.Submitted, "#password-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field = event.input
        password = field.value
        field.value = ""  # not kept in the widget once given
        self.dismiss(password)

    def action_cancel(self) -> None:
        self.query_one("#password-input", Input).value = ""
        self.dismiss(None)


async def ask_password(app: Any, keystore: str) -> str:
    """Show `PasswordScreen` on `app` and wait for it; ActionRefused when cancelled."""
    screen = PasswordScreen(keystore)
    try:
        get_current_worker()
    except NoActiveWorker:  # not in a worker: wait on a future set by the screen's callback
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def done(value: str | None) -> None:
            if not future.done():
                future.set_result(value)

        await app.push_screen(screen, done)
        password = await future
    else:  # the action modal's worker: wait for the dismiss value
        password = await app.push_screen_wait(screen)
    if password is None:
        raise ActionRefused("chain.sign", NOT_GIVEN)
    return password


def console_password_provider(get_app: Callable[[], Any]) -> Callable[[str], Awaitable[str]]:
    """A `password_provider` for `build_engine` that asks on the console `get_app()` returns
    (looked up when a keystore is used: the engine may be built before the app exists)."""

    async def provider(keystore: str) -> str:
        app = get_app()
        if app is None or not getattr(app, "is_running", False):
            raise ActionRefused("chain.sign", NO_CONSOLE)
        return await ask_password(app, keystore)

    return provider
