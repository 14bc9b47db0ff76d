"""Status header: stack name, environment, operator, open incident (severity + SLA clock
counting down), read-only badge and the clock.

The clock is a function (`clock=`) so tests can freeze it; by default the app's `clock`
attribute when it has one, else the system clock in UTC. The header repaints only when
its text changes (once a second while an SLA clock or the clock runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from backends.model import Severity, Snapshot, Status

from .common import BEAT, Beat, BeatCall, BeatTicker, Styles, fmt_duration

PRODUCTION = ("production", "prod", "prd", "live", "mainnet")


@dataclass(frozen=True)
class IncidentInfo:
    """What the header shows of an open incident (any object with these attributes works)."""

    severity: Severity
    title: str = ""
    sla_due: datetime | None = None  # respond / resolve by
    id: str = ""


def sla_text(due: datetime | None, now: datetime) -> tuple[str, Status]:
    """'SLA 12m04s left' (ok, warn in the last 5 min) or 'SLA overdue 3m12s' (crit)."""
    if due is None:
        return "", Status.UNKNOWN
    left = (due - now).total_seconds()
    if left < 0:
        return f"SLA overdue {fmt_duration(-left)}", Status.CRIT
    return f"SLA {fmt_duration(left)} left", Status.WARN if left < 300 else Status.OK


def audit_badge(problem: str) -> str:
    """The header's short words for why the audit trail cannot be written."""
    p = problem.lower()
    if "no space" in p or "quota" in p:
        return "AUDIT DISK FULL"
    if "read-only" in p:
        return "AUDIT ON READ-ONLY FS"
    if "permission" in p:
        return "AUDIT NOT WRITABLE"
    return "AUDIT UNWRITABLE"


class StatusHeader(Horizontal):
    """One line across the top of the console."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; dock: top; background: $panel; }
    StatusHeader > .header-left { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    StatusHeader > .header-right { width: auto; height: 1; }
    """

    def __init__(self, *, name: str = "warroom", environment: str = "", operator: str = "",
                 read_only: bool = False, kiosk: bool = False, incident: Any = None,
                 clock: Callable[[], datetime] | None = None, tick: float = 1.0,
                 id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.stack = name
        self.environment = environment
        self.operator = operator
        self.read_only = read_only
        self.kiosk = kiosk
        self.incident = incident
        self.audit_problem: str | None = None  # why the audit trail cannot be written now
        self._clock = clock
        self.tick = tick
        self._snapshot: Snapshot | None = None
        self._shown: dict[str, tuple] = {}
        self.repaints = 0

    def compose(self) -> ComposeResult:
        yield Static("", classes="header-left")
        yield Static("", classes="header-right")

    def on_mount(self) -> None:
        self.render_now()
        previous = getattr(self, "ticker", None)
        if previous is not None:  # mounted again (the header moves with the screens): one tick
            previous.stop()
        if self.tick > 0:  # ticks on the wall clock's second, with the other repaints (on_beat)
            self.ticker: BeatCall | BeatTicker
            if self.tick == BEAT:  # on the app's beat: the same callback as the other repaints
                self.ticker = Beat.of(self).each(self, self._tick)
            else:
                ticker = self.ticker = BeatTicker(self, self.tick, self._tick, name="header-clock")
                ticker.start()
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._repaint())

    def _tick(self) -> None:
        # Covered by a full screen (the kiosk, a detail, the incident): no repaint. Textual
        # answers a change on a screen underneath with a repaint of the whole top screen
        # (8 ms each second on the kiosk). Under dialogs it still ticks: they show it.
        if self.covered():
            return
        self.render_now()

    def covered(self) -> bool:
        """A screen that is not a dialog is above this header's screen."""
        from textual.screen import ModalScreen

        try:
            screen = self.screen
            stack = self.app.screen_stack
        except Exception:
            return False
        if screen not in stack:
            return True
        return not all(isinstance(s, ModalScreen) for s in stack[stack.index(screen) + 1:])

    def on_unmount(self) -> None:
        # Textual prunes a removed node's subscription only on the next theme change; the
        # callback closes over the node, so until then the pane (and its rows) stays alive.
        self.app.theme_changed_signal.unsubscribe(self)

    def _repaint(self) -> None:
        self._shown.clear()
        self.render_now()

    # ------------------------------------------------------------------ contract

    def now(self) -> datetime:
        if self._clock is not None:
            return self._clock()
        app_clock = getattr(self.app, "clock", None)
        if callable(app_clock):
            try:
                value = app_clock()
                if isinstance(value, datetime):
                    return value
            except Exception:
                pass
        return datetime.now(UTC)

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        if self.is_mounted:
            self.render_now()

    def set_incident(self, incident: Any) -> None:
        """Show an open incident (None: no open incident)."""
        self.incident = incident
        if self.is_mounted:
            self.render_now()

    def set_read_only(self, read_only: bool) -> None:
        self.read_only = read_only
        if self.is_mounted:
            self.render_now()

    def set_audit_problem(self, problem: str | None) -> None:
        """Show that the audit trail cannot be written (None: it can): actions are refused."""
        self.audit_problem = problem
        if self.is_mounted:
            self.render_now()

    # ------------------------------------------------------------------ rendering

    def left_text(self, now: datetime) -> Text:
        st = Styles(getattr(self.app, "theme_variables", None))
        variables = getattr(self.app, "theme_variables", {}) or {}
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.stack} ", style="bold reverse")
        if self.environment:
            prod = self.environment.strip().lower() in PRODUCTION
            style = f"bold reverse {variables.get('badge-production', '') or st.crit}" if prod else "bold"
            text.append(" ")
            text.append(f" {self.environment} ", style=style.strip())
        if self.operator:
            text.append(f"  op {self.operator}", style="dim")
        text.append("  ")
        text.append_text(self.incident_text(now, st))
        findings = self.findings_text(st)
        if findings:
            text.append("  ")
            text.append_text(findings)
        return text

    def incident_text(self, now: datetime, st: Styles) -> Text:
        inc = self.incident
        if inc is None:
            return Text("no open incident", style="dim")
        sev = getattr(inc, "severity", None)
        if isinstance(sev, str):
            try:
                sev = Severity.parse(sev)
            except ValueError:
                sev = None
        status = Status.CRIT if sev is None or sev <= Severity.P1 else Status.WARN
        label = sev.label if isinstance(sev, Severity) else "?"
        title = getattr(inc, "title", "") or getattr(inc, "id", "") or "incident"
        text = Text()
        text.append(f" {status.symbol} INCIDENT {label} ", style=f"bold reverse {st.of(status)}".strip())
        text.append(f" {title}", style="bold")
        due = getattr(inc, "sla_due", None) or getattr(inc, "due_at", None) or getattr(inc, "respond_by", None)
        sla, sla_status = sla_text(due, now) if isinstance(due, datetime) else ("", Status.UNKNOWN)
        if sla:
            text.append(f"  {sla_status.symbol} {sla}", style=f"bold {st.of(sla_status)}".strip())
        return text

    def findings_text(self, st: Styles) -> Text | None:
        snap = self._snapshot
        if snap is None:
            return None
        if not snap.findings:
            return Text(f"{Status.OK.symbol} no findings", style=st.ok)
        worst = min(f.severity for f in snap.findings)
        status = Status.CRIT if worst <= Severity.P1 else Status.WARN
        n = len(snap.findings)
        return Text(f"{status.symbol} {n} finding{'s' if n != 1 else ''} (worst {worst.label})",
                    style=f"bold {st.of(status)}".strip())

    def right_text(self, now: datetime) -> Text:
        variables = getattr(self.app, "theme_variables", {}) or {}
        text = Text(no_wrap=True)
        if self.audit_problem:
            st = Styles(getattr(self.app, "theme_variables", None))
            text.append(f" {Status.CRIT.symbol} {audit_badge(self.audit_problem)} · actions refused ",
                        style=f"bold reverse {st.crit}".strip())
            text.append(" ")
        if self.read_only:
            badge = " KIOSK · READ-ONLY " if self.kiosk else " READ-ONLY "
            text.append(badge, style=f"bold reverse {variables.get('badge-readonly', '')}".strip())
            text.append(" ")
        text.append(now.strftime("%H:%M:%S %Z").strip() + " ", style="bold")
        return text

    def shown(self, which: str) -> str:
        """The plain text of "left" or "right" as last painted."""
        sig = self._shown.get(which)
        return sig[0] if sig else ""

    def render_now(self) -> None:
        now = self.now()
        self._put("left", self.left_text(now))
        self._put("right", self.right_text(now))

    def _put(self, which: str, text: Text) -> None:
        sig = (text.plain, tuple((s.start, s.end, str(s.style)) for s in text.spans))
        if self._shown.get(which) == sig:
            return
        part = next((w for w in self.query(f".header-{which}") if isinstance(w, Static)), None)
        if part is None:  # not composed (yet, or again while it moves to another screen): on_mount paints it
            return
        old = self._shown.get(which)
        self._shown[which] = sig
        self.repaints += 1
        # Both parts are one row high; the left one is 1fr wide: only the right one's width
        # follows its text. A clock tick (same width) repaints the part without a layout pass.
        layout = which == "right" and (old is None or cell_len(old[0]) != cell_len(sig[0]))
        part.update(text, layout=layout)
