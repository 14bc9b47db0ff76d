"""No fixed sleeps in tests: a sleep (time.sleep, asyncio.sleep, pilot.pause with a duration)
must be inside a polling loop (a `while`, or a `for` that can break/return/raise), so a
test waits on a condition with a deadline. The few bare ones that are not waits for
something are listed here, each with its reason. sleep(0) (a yield) is always fine."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# (file, enclosing function, call): why it is not a wait for something
ALLOWED: dict[tuple[str, str, str], str] = {
    ("test_bad_backends.py", "_answer", "asyncio.sleep(10)"): "a local server simulating a hang",
    ("test_bad_backends.py", "_answer", "asyncio.sleep(1.0)"): "a local server dripping its answer a byte a second",
    ("test_evm.py", "handle", "asyncio.sleep(3600)"): "a local server that never answers",
    ("test_jsonrpc.py", "handle", "asyncio.sleep(3600)"): "a local server that never answers",
    ("test_http.py", "_health", "asyncio.sleep(self.delay)"): "a local server's injected latency",
    ("test_rpcscore.py", "handle", "asyncio.sleep(mode['delay'])"): "a local server's injected latency",
    ("test_monitor.py", "hang", "asyncio.sleep(10)"): "a source simulating a hang (its timeout is tested)",
    ("test_monitor.py", "slow", "asyncio.sleep(30)"): "a source simulating a slow answer (the deadline is tested)",
    ("test_logs.py", "test_idle_file_costs_no_cpu", "asyncio.sleep(1.5)"): "the CPU measurement's interval",
    ("test_serve.py", "test_browser_shows_dashboard_and_leaves_nothing_behind", "time.sleep(2.0)"):
        "the CPU measurement's interval",
    ("test_logs.py", "test_partial_line_waits_for_its_newline", "asyncio.sleep(0.1)"):
        "a negative check: a half line must not appear (no event to wait on)",
    ("test_incident_loop.py", "test_the_read_only_console_offers_no_change", "pilot.pause(0.2)"):
        "a negative check: the key opens nothing (no event to wait on)",
    ("test_incident_loop.py", "test_the_read_only_console_offers_no_change", "pilot.pause(0.5)"):
        "a negative check: the palette offers no action (its search is asynchronous)",
    ("test_operator_loop.py", "test_an_exception_in_any_path_is_reported_and_the_console_goes_on",
     "pilot.pause(0.1)"): "lets the pushed modal mount before it is dismissed",
    # owned by other engineers' files (not edited here): to be converted there
    ("test_log_producers.py", "follow_producer", "asyncio.sleep(0.1)"): "other owner's file",
    ("test_logtail.py", "test_rendering_is_batched_and_bounded_to_10_per_second", "pilot.pause(0.2)"):
        "other owner's file (a rate measurement)",
    ("test_logtail.py", "test_only_visible_rows_are_rendered", "pilot.pause(0.1)"): "other owner's file",
    ("test_logtail.py", "test_hub_feeds_the_tail", "pilot.pause(0.1)"): "other owner's file",
}


def _is_sleep(call: ast.Call) -> bool:
    f = call.func
    if not isinstance(f, ast.Attribute):
        return False
    if f.attr == "sleep" and isinstance(f.value, ast.Name) and f.value.id in ("time", "asyncio"):
        return True
    return f.attr == "pause" and bool(call.args)


def _zero(call: ast.Call) -> bool:
    return bool(call.args) and isinstance(call.args[0], ast.Constant) and call.args[0].value == 0


def _exits(loop: ast.AST) -> bool:
    return any(isinstance(n, ast.Break | ast.Return | ast.Raise) for b in loop.body for n in ast.walk(b))


def bare_sleeps() -> list[tuple[str, str, str, int]]:
    out = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _is_sleep(node)) or _zero(node):
                continue
            a, loop, fn = node, None, ""
            while a in parents:
                a = parents[a]
                if loop is None and isinstance(a, ast.While | ast.For | ast.AsyncFor):
                    loop = a
                if not fn and isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef):
                    fn = a.name
            if isinstance(loop, ast.While) or (loop is not None and _exits(loop)):
                continue
            out.append((path.name, fn, ast.unparse(node), node.lineno))
    return out


def test_no_new_bare_sleep_in_tests():
    new = [f"{f}:{line} in {fn}: {call}" for f, fn, call, line in bare_sleeps() if (f, fn, call) not in ALLOWED]
    assert not new, ("a fixed sleep in a test: wait on the condition with a deadline instead "
                     "(or list it in tests/test_no_sleeps.py with its reason):\n" + "\n".join(new))


def test_the_allow_list_has_no_stale_entries():
    found = {(f, fn, call) for f, fn, call, _ in bare_sleeps()}
    assert not [k for k in ALLOWED if k not in found], [k for k in ALLOWED if k not in found]
